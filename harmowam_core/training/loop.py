"""The one accelerate training loop both stages use.

    loop = TrainLoop(spec, out_dir, model, loss_fn, dataset, max_steps=None)
    loop.run(resume=True, on_log=print)
    model = loop.trained_model()

`loss_fn(model, batch)` returns a dict of scalar tensors with a "loss" entry (the one optimised; the others
are logged). The loop runs unchanged under `accelerate launch --num_processes N` (DDP, or FSDP with the
shipped config): AdamW with linear warm-up, mixed precision where the device supports it ("auto": bf16 on
a CUDA device that has it, otherwise full precision), gradient accumulation, an optional EMA of the
weights, and a checkpoint every `checkpoint_every` steps (`out/checkpoints/step_N`, accelerate state plus
the step) that `resume` continues from, with the optimiser, scheduler and EMA state and the RNG states. A
checkpoint appears under its name whole (`save_checkpoint`): a run killed at any moment resumes from its newest.

The schedule's horizon is the recipe's `spec.steps`; `max_steps` only stops the run earlier (with a checkpoint),
so a run stopped at step 10 and resumed to 20 is the 20-step run. A resumed run continues the data stream where
the checkpoint left it: epoch e is shuffled by `spec.seed + e` (accelerate's `SeedableRandomSampler`), and the
batches the saved steps took are skipped (`Accelerator.skip_first_batches`, as accelerate's checkpointing guide
does); the noise and augmentation drawn from torch's global RNG continue from the saved RNG state. So on one
machine, with the same recipe, process count and deterministic kernels (`torch.use_deterministic_algorithms`;
on the CPU the default), a run stopped and resumed any number of times ends at the weights and EMA of the run
that never stopped (tests/test_training_loop.py; `benchmarks/resume_determinism.py` kills a run 20 times).
A time-capped run (`max_minutes`) is the exception: its schedule follows the time used. A resume after the
data or the batch settings changed is refused (`resume`). Hooks run with the RNG state forked, so what they
draw does not move the training's. A dataset that draws
random numbers itself (in `__getitem__`) would break this; the shipped ones do not (the experts' augmentation
runs in the model's forward).

`spec.max_minutes` caps the loop's wall-clock time (`harmowam reproduce --budget-minutes`): past it the loop
stops after the step in progress, saves a checkpoint and sets `stopped_by_time`; `step` says how many steps
it did. A resumed run counts the time of the runs before it (kept in each checkpoint). A cosine schedule then
decays by the share of the time used when that is ahead of the share of the steps, so a run stopped by its
time cap still ends at a low learning rate.

`log_with` names accelerate's experiment trackers (`tensorboard`, `wandb`, ...; `harmowam train-wm --log-with`):
the loop starts them with `config` (the resolved recipe, flattened) under `out/logs`, logs the loss terms, the
learning rate and samples/s every `log_every` steps (and at the last step), and finishes them when it ends.
Nothing is tracked by default, and no tracker starts that was not named.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from harmowam_core.config import TrainSpec
from harmowam_core.data.format import DataMapping
from harmowam_core.data.reader import DatasetReader
from harmowam_core.errors import HarmoWAMError, ParameterError

KEEP_CHECKPOINTS = 2
LOG_EVERY = 10  # steps between two tracker entries
TRACKER_EXTRAS = {"tensorboard": "'harmowam[tensorboard]'", "comet_ml": "comet-ml"}  # what to pip install


@dataclass
class StepLog:
    step: int
    total: int
    losses: dict[str, float]
    samples_per_second: float


def resolve_precision(requested: str) -> str:
    if requested != "auto":
        return requested
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def open_training_run(
    data: str | Path, out: Path, resume: bool, max_steps: int | None, mapping: DataMapping | None = None
) -> DatasetReader:
    """The checks both stages make before anything heavy: a positive step cap, no silent overwrite of a run,
    a dataset with at least one episode to hold out. Returns the dataset's reader, reading the features
    `mapping` (the recipe's `data:` section) names."""
    if max_steps is not None and max_steps <= 0:
        raise ParameterError("max_steps", f"must be positive, got {max_steps}")
    if not resume and checkpoints(out):
        raise HarmoWAMError(f"{out} already holds checkpoints: pass --resume to continue, or choose another --out")
    reader = DatasetReader(data, mapping)
    if reader.num_episodes < 2:
        raise HarmoWAMError(f"{reader.root}: {reader.num_episodes} episode(s); training needs at least 2 (1 held out)")
    return reader


def tracker_names() -> list[str]:
    """The trackers accelerate knows (its `log_with` values), "all" aside."""
    from accelerate.utils import LoggerType

    return [t.value for t in LoggerType if t.value != "all"]


def available_trackers() -> set[str]:
    """The trackers whose package is installed."""
    from accelerate.tracking import get_available_trackers

    return {getattr(t, "value", str(t)) for t in get_available_trackers()}


def parse_log_with(log_with: str | list[str] | None) -> list[str]:
    """`--log-with`: tracker names as accelerate's `log_with` takes them, comma-separated for several; None, ""
    and "none" track nothing. An unknown or uninstalled tracker is a HarmoWAMError, and so is "all" (it would
    start every installed tracker, some of which send the run to a server): name the ones you want."""
    if log_with is None:
        return []
    items = log_with.split(",") if isinstance(log_with, str) else list(log_with)
    names = list(dict.fromkeys(n.strip().lower() for n in items if n.strip() and n.strip().lower() != "none"))
    known = tracker_names()
    for name in names:
        if name == "all":
            raise ParameterError("log_with", f"all is not accepted: name the trackers ({', '.join(known)})")
        if name not in known:
            raise ParameterError("log_with", f"{name}: no such tracker; accelerate knows {', '.join(known)}")
    missing = [n for n in names if n not in available_trackers()]
    if missing:
        name = missing[0]
        raise ParameterError(
            "log_with", f"{name}: the {name} package is not installed (pip install {TRACKER_EXTRAS.get(name, name)})"
        )
    return names


def tracker_config(config: dict, prefix: str = "") -> dict:
    """`config` flattened for the trackers' hyperparameter tables: nested keys joined by ".", lists and other
    values that are not a bool, number, string or None written as JSON (or their str)."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(tracker_config(value, f"{name}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            try:
                flat[name] = json.dumps(value)
            except TypeError:
                flat[name] = str(value)
    return flat


def lr_factor(spec, total: int, step: int) -> float:
    """The learning rate's factor at scheduler step `step`: a linear warmup, then constant or a cosine decay
    that reaches 0 at scheduler step `total`."""
    warmup = min(1.0, (step + 1) / max(1, spec.warmup_steps))
    if spec.lr_schedule == "constant":
        return warmup
    progress = min(1.0, step / max(1, total))
    return warmup * 0.5 * (1.0 + math.cos(math.pi * progress))


def _scheduler_factor(loop: TrainLoop, spec, horizon: int, step: int) -> float:
    """lr_factor at scheduler step `step`, or further along where the time cap's share used is ahead of it."""
    if loop.time_limit is not None and spec.lr_schedule == "cosine":
        step = max(step, int(horizon * min(1.0, loop.elapsed_seconds() / loop.time_limit)))
    return lr_factor(spec, horizon, step)


def _remove_checkpoint(path: Path) -> None:
    """Hide a checkpoint (one rename) before deleting it: a kill midway leaves no half `step_N`."""
    hidden = path.with_name(f".{path.name}.old")
    shutil.rmtree(hidden, ignore_errors=True)
    path.rename(hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def checkpoints(out: Path) -> list[Path]:
    root = out / "checkpoints"
    found = [p for p in root.glob("step_*") if (p / "step.json").exists()] if root.exists() else []
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


class TrainLoop:
    clock: Callable[[], float] = staticmethod(time.monotonic)  # seconds; tests set a fake clock

    def __init__(
        self,
        spec: TrainSpec,
        out: Path,
        model: nn.Module,
        loss_fn: Callable[[nn.Module, dict], dict[str, torch.Tensor]],
        dataset: Dataset,
        max_steps: int | None = None,
        collate_fn: Callable | None = None,
        log_with: str | list[str] | None = None,
        config: dict | None = None,
        run_name: str = "train",
        log_every: int = LOG_EVERY,
    ):
        from accelerate import Accelerator
        from accelerate.utils import (
            DataLoaderConfiguration,
            GradientAccumulationPlugin,
            ProjectConfiguration,
            set_seed,
        )

        self.spec, self.out, self.loss_fn = spec, Path(out), loss_fn
        self.log_with, self.config, self.run_name = parse_log_with(log_with), config or {}, run_name
        self.log_every = max(1, log_every)
        self.total = spec.steps if max_steps is None else min(spec.steps, max_steps)  # where this run stops
        if len(dataset) == 0:
            raise HarmoWAMError("no training samples: the dataset has no episodes left after the held-out split")
        set_seed(spec.seed)
        self.time_limit = spec.max_minutes * 60.0 if spec.max_minutes else None  # seconds
        self.seconds_before = 0.0  # training time of the runs this one resumed
        self._run_start: float | None = None
        self.stopped_by_time = False
        tracking = {}
        if self.log_with:
            logs = ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.logging_dir))
            tracking = {"log_with": self.log_with, "project_config": logs}
        self.accelerator = Accelerator(
            mixed_precision=resolve_precision(spec.mixed_precision),
            # a step is grad_accum_steps micro-batches of a stream that runs on across epochs: no extra
            # optimiser step at an epoch's end, so every checkpoint falls where no gradient is pending
            gradient_accumulation_plugin=GradientAccumulationPlugin(
                num_steps=spec.grad_accum_steps, sync_with_dataloader=False
            ),
            # epoch e shuffled by seed + e, so a resumed run can replay the order up to where it stopped
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=spec.seed),
            **tracking,
        )
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=spec.weight_decay)
        # the recipe's steps, not max_steps (which only stops early); accelerate advances a prepared scheduler
        # once per process at each optimiser step (not per micro-batch)
        horizon = spec.steps * self.accelerator.num_processes
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(_scheduler_factor, self, spec, horizon))
        loader = DataLoader(
            dataset,
            batch_size=spec.batch_size,
            shuffle=True,
            drop_last=len(dataset) >= spec.batch_size,
            num_workers=spec.num_workers,
            collate_fn=collate_fn,
            generator=torch.Generator().manual_seed(spec.seed),  # the workers' base seed: not torch's global RNG
        )
        self.model, self.optimizer, self.loader, self.scheduler = self.accelerator.prepare(
            model, optimizer, loader, scheduler
        )
        self.ema = None
        if spec.ema_decay > 0 and self.sharded:
            raise HarmoWAMError("ema_decay: needs one process or DDP: FSDP shards the weights; set ema_decay: 0")
        if spec.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(
                self.accelerator.unwrap_model(self.model), multi_avg_fn=get_ema_multi_avg_fn(spec.ema_decay)
            )
            self.accelerator.register_for_checkpointing(self.ema)
        self.step = 0

    # ------------------------------------------------------------------------------------------- state
    def save_checkpoint(self) -> Path:
        """Save into a hidden `.step_N.partial` and rename it `step_N` once whole (step.json written): a process
        killed meanwhile leaves only hidden folders, which the next save removes. Old checkpoints are renamed
        hidden before they are deleted, so a `step_N` folder is always whole."""
        root = self.out / "checkpoints"
        path, partial = root / f"step_{self.step}", root / f".step_{self.step}.partial"
        if self.accelerator.is_main_process:
            for stale in root.glob(".step_*"):  # left by a killed run
                shutil.rmtree(stale, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(partial))
        if self.accelerator.is_main_process:
            saved = {"step": self.step, "seconds": self.elapsed_seconds(), **self._stream()}
            (partial / "step.json").write_text(json.dumps(saved))
            if path.exists():  # saved again at the same step (a resumed run)
                _remove_checkpoint(path)
            partial.rename(path)
            for old in checkpoints(self.out)[:-KEEP_CHECKPOINTS]:
                _remove_checkpoint(old)
        self.accelerator.wait_for_everyone()
        return path

    def _stream(self) -> dict[str, int]:
        """What the data stream's position depends on: batches per epoch and process, and per step."""
        return {"batches_per_epoch": len(self.loader), "grad_accum_steps": self.spec.grad_accum_steps}

    def resume(self) -> int:
        """Continue from the newest checkpoint, if any; returns the step it continues at. Raises HarmoWAMError
        when the data or the batch settings changed since it was written (the stream would not continue: the
        resumed run would see other batches than the one it resumes; checkpoints written before this was
        recorded are not checked), or when the model it holds has other parameters than the one built now."""
        found = checkpoints(self.out)
        if found:
            saved = json.loads((found[-1] / "step.json").read_text())
            then = {k: saved[k] for k in self._stream() if k in saved}
            now = {k: v for k, v in self._stream().items() if k in then}
            if then != now:
                changed = ", ".join(f"{k} {then[k]} then, {now[k]} now" for k in then if then[k] != now[k])
                raise HarmoWAMError(
                    f"{found[-1]}: the data or batch settings changed since this checkpoint ({changed}); resuming"
                    " would not continue its data stream: restore them, or train into a new --out"
                )
            try:
                self.accelerator.load_state(str(found[-1]))
            except RuntimeError as err:  # torch's load_state_dict: missing keys or other shapes
                if not any(m in str(err) for m in ("size mismatch", "Missing key", "Unexpected key")):
                    raise
                raise HarmoWAMError(
                    f"{found[-1]}: this checkpoint holds a model of other sizes than the recipe builds now (a --set"
                    " or a preset default changed since it was written; the CHANGELOG lists changed defaults):"
                    " resume with the sizes it was trained with, or train into a new --out"
                ) from None
            self.step, self.seconds_before = saved["step"], float(saved.get("seconds", 0.0))
        return self.step

    def elapsed_seconds(self) -> float:
        """Training time so far: this run's (since `run` started) plus that of the runs it resumed."""
        running = self.clock() - self._run_start if self._run_start is not None else 0.0
        return self.seconds_before + running

    def out_of_time(self) -> bool:
        """Whether the time cap is reached; every process takes the main process's answer (DDP stops together)."""
        if self.time_limit is None:
            return False
        over = self.elapsed_seconds() >= self.time_limit
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast

            flag = torch.tensor([float(over)], device=self.accelerator.device)
            over = bool(broadcast(flag, from_process=0).item())
        return over

    @property
    def logging_dir(self) -> Path:
        """Where the trackers write (each in `<run_name>/` below it)."""
        return self.out / "logs"

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def sharded(self) -> bool:
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type == DistributedType.FSDP

    def trained_model(self, build: Callable[[], nn.Module] | None = None) -> nn.Module | None:
        """The weights to keep: the EMA where enabled, else the model itself (unwrapped). Under FSDP every
        process must call this: the shards are gathered into `build()` on the main process (others get None)."""
        if self.ema is not None:
            return self.ema.module
        if self.sharded:
            state = self.accelerator.get_state_dict(self.model)
            if not self.is_main_process:
                return None
            if build is None:
                raise ValueError("trained_model() under FSDP needs `build`, a factory of an unsharded model")
            model = build()
            model.load_state_dict(state)
            return model
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------------------------------- loop
    def _batches(self) -> Iterator[dict]:
        """The data stream from `self.step` on: `grad_accum_steps` batches per step and process, epoch after
        epoch; a resumed run starts in the epoch and at the batch where its checkpoint's steps ended."""
        epoch, skip = divmod(self.step * self.spec.grad_accum_steps, len(self.loader))
        while True:
            self.loader.set_epoch(epoch)
            yield from self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader
            epoch, skip = epoch + 1, 0

    def run(self, resume: bool = False, on_log: Callable[[StepLog], None] | None = None, hooks=()) -> None:
        """Train to the step total, or until the time cap (`spec.max_minutes`); `hooks` are (every, fn(loop))
        pairs called on every process after those steps (not after the last: the caller has the final model).
        Take the weights with `trained_model`."""
        if resume:
            self.resume()
        self._run_start = self.clock()
        if self.step < self.total and self.out_of_time():  # resumed with its time already spent
            self.stopped_by_time = True
            return
        self._start_tracking()
        try:
            self._train(on_log, hooks)
        finally:
            self._end_tracking()

    def _start_tracking(self) -> None:
        if not self.log_with:
            return
        init_kwargs = {"wandb": {"dir": str(self.logging_dir)}} if "wandb" in self.log_with else {}
        if self.accelerator.is_main_process:
            self.logging_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator.init_trackers(self.run_name, config=tracker_config(self.config), init_kwargs=init_kwargs)

    def _end_tracking(self) -> None:
        """What `accelerator.end_training()` does for the trackers. Not end_training itself: it also destroys the
        process group, which a multi-process run still needs after the loop (FSDP gathers the weights, every
        process waits for the evaluation)."""
        if not self.log_with:
            return
        for tracker in self.accelerator.trackers:
            tracker.finish()
        self.accelerator.trackers = []

    def _log(self, losses: dict[str, torch.Tensor], rate: float) -> None:
        values = {f"train/{k}": float(v.detach()) for k, v in losses.items()}
        values["train/lr"] = float(self.optimizer.param_groups[0]["lr"])
        values["train/samples_per_second"] = rate
        self.accelerator.log(values, step=self.step)

    def _train(self, on_log: Callable[[StepLog], None] | None, hooks) -> None:
        self.model.train()
        batches = self._batches()
        seen, start = 0, time.perf_counter()
        while self.step < self.total:
            for _ in range(self.spec.grad_accum_steps):
                batch = next(batches)
                with self.accelerator.accumulate(self.model), self.accelerator.autocast():
                    losses = self.loss_fn(self.model, batch)
                    loss = losses["loss"]
                    if not math.isfinite(loss.item()):
                        raise HarmoWAMError(
                            f"the loss became {loss.item()} at step {self.step}; lower the learning rate"
                        )
                    self.accelerator.backward(loss)
                    if self.accelerator.sync_gradients:
                        self.accelerator.clip_grad_norm_(self.model.parameters(), 1.0)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad()
                seen += _batch_size(batch) * self.accelerator.num_processes
            self.step += 1
            if self.ema is not None:
                self.ema.update_parameters(self.accelerator.unwrap_model(self.model))
            rate = seen / max(time.perf_counter() - start, 1e-9)
            if on_log is not None and self.accelerator.is_main_process:
                on_log(StepLog(self.step, self.total, {k: float(v.detach()) for k, v in losses.items()}, rate))
            capped = self.step < self.total and self.out_of_time()
            if self.log_with and (capped or self.step % self.log_every == 0 or self.step == self.total):
                self._log(losses, rate)
            if capped or self.step % self.spec.checkpoint_every == 0 or self.step == self.total:
                self.save_checkpoint()
            if capped:
                self.stopped_by_time = True
                break
            for every, fn in hooks:
                if every and self.step % every == 0 and self.step < self.spec.steps:  # the last: the model itself
                    with self._rng_forked():  # a run resumed from this step's checkpoint never ran the hook
                        fn(self)

    def _rng_forked(self):
        """torch's CPU RNG, and the training device's, restored after the block."""
        device = self.accelerator.device
        return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def _batch_size(batch) -> int:
    if isinstance(batch, dict):
        for v in batch.values():
            if isinstance(v, torch.Tensor):
                return v.shape[0]
            if isinstance(v, list):
                return len(v)
    return 1
