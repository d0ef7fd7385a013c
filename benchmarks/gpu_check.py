"""GPU check of the paper preset: build it, train each stage one step, plan, run the closed loop; one table.

    bash benchmarks/gpu_check.sh                                   # on a CUDA machine (see its header)
    python benchmarks/gpu_check.py [--preset paper] [--wm-steps 3 5 10 50] [--repeats 3] [--actions 48]
                                   [--train-steps 2] [--budget-s 240] [--json PATH] [--set SECTION.KEY=VALUE ...]
    python benchmarks/gpu_check.py --device meta                   # build only, on no memory: parameter counts
    python benchmarks/gpu_check.py --preset tiny --device cpu --allow-cpu --repeats 1 --actions 24   # smoke run

Everything is built from configurations with random weights; nothing is downloaded, and the simulator is not
imported. The paper preset is the Wan2.2-TI2V-5B-sized world model (the Wan2.2 VAE, 480 x 640, 13 frames), the
28-block ~1B-parameter action DiT with SigLIP-base and T5-base, and DINOv2-base, all built directly on the GPU.
Two stand-ins, both frozen: the world model's UMT5-XXL text encoder (5.7B parameters, run once per instruction
and cached) is a 2-layer T5 of its width, and T5-base's sentencepiece tokenizer is a byte-level one.

It reports, for batch 1:
- one training step of stage 1 (the world model's flow-matching loss) and of stage 2 (the experts' loss on the
  frozen world model's imagined future), each as `train-wm` / `train-experts` run it: fp32 weights under bf16
  autocast, AdamW, gradients clipped to 1.0; the time of the last step and the peak GPU memory;
- the latency of one plan (`HarmoWAMPolicy.plan`: world model, gate, both experts) at 3/5/10/50 world-model
  denoising steps, with the world model frozen in bf16 weights;
- executed actions/s in closed loop, synchronous and async (chunk 12), on an instant station (one fixed
  observation, returned at once): what the policy alone sustains.
A check that fails (out of memory, say) is marked in the table and the others still run; the exit code is then 1.
Checks not started within --budget-s seconds are marked skipped, so the table comes out inside the device's time.
`--set` changes the preset as a recipe's `model.overrides` does. Without a CUDA device it refuses (exit code 2)
unless given --allow-cpu (or --device meta).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()  # the time budget and the total count from here, imports included
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout that is not pip-installed (the GPU machine: PYTHONPATH=.)
    sys.path.insert(0, str(ROOT))

INSTRUCTION = "stack the coke cans"
CAMERAS = ["front", "top", "wrist"]  # a single-arm station's cameras; the world model reads the front one
ACTION_DIM = STATE_DIM = 7

# Random stand-ins, built from the configurations of the checkpoints the paper preset names (their config.json).
SIGLIP_BASE = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   image_size=224, patch_size=16)  # fmt: skip
T5_BASE = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
               feed_forward_proj="relu", is_encoder_decoder=False, use_cache=False)  # fmt: skip
DINOV2_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4, image_size=518,
                   patch_size=14, layerscale_value=1.0)  # fmt: skip


# ------------------------------------------------------------------------------------------------ report
@dataclass
class Row:
    check: str
    result: str
    memory: str = ""
    notes: str = ""
    section: str = ""


@dataclass
class Report:
    title: str
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    def add(self, section: str, check: str, result: str, memory: str = "", notes: str = "") -> None:
        self.rows.append(Row(check, result, memory, notes, section))
        if section != "parameters":  # as it happens too: a run cut short still shows what it measured
            progress(f"{check}: {result}" + (f", peak {memory}" if memory and memory != "-" else ""))

    @contextlib.contextmanager
    def attempt(self, section: str, check: str) -> Iterator[None]:
        """Runs a check; one that raises is recorded as FAILED (traceback on stderr) and the next one runs."""
        try:
            yield
        except Exception as e:  # noqa: BLE001 - every check is reported, whatever broke it
            traceback.print_exc()
            message = str(e).splitlines()[0] if str(e) else ""
            self.add(section, check, "FAILED", notes=f"{type(e).__name__}: {message}"[:160])
            self.failed.append(check)
            free_memory()

    def print(self) -> None:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            self._print_plain()
            return
        table = Table(title=self.title, title_justify="left")
        for name in ("check", "result", "peak GPU memory", "notes"):
            table.add_column(name, justify="right" if name in ("result", "peak GPU memory") else "left")
        section = None
        for row in self.rows:
            if section is not None and row.section != section:
                table.add_section()
            section = row.section
            table.add_row(row.check, row.result, row.memory, row.notes)
        Console(width=170).print(table)

    def _print_plain(self) -> None:
        widths = [max(len(getattr(r, k)) for r in self.rows) for k in ("check", "result", "memory")]
        print(self.title)
        for row in self.rows:
            print(
                f"{row.check:<{widths[0]}}  {row.result:>{widths[1]}}  {row.memory:>{widths[2]}}  {row.notes}".rstrip()
            )


def progress(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)


def count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


# ------------------------------------------------------------------------------------------------ device
def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Meter:
    """Wall time with the device synchronised, and the peak GPU memory since `start` (None off CUDA)."""

    def __init__(self, device):
        import torch

        self.torch, self.cuda = torch, device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def start(self) -> None:
        self.sync()
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()

    def seconds(self) -> float:
        self.sync()
        return time.perf_counter() - self.t0

    def allocated_gib(self) -> float | None:
        return self.torch.cuda.memory_allocated() / 2**30 if self.cuda else None

    def peak_gib(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None


def gib(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} GiB"


# ------------------------------------------------------------------------------------------------ build
@contextlib.contextmanager
def random_encoders() -> Iterator[None]:
    """The experts' frozen encoders named by a checkpoint (the paper preset's SigLIP, T5, DINOv2) built as
    random models of that checkpoint's configuration instead of loaded (on the default device, so under a
    `torch.device` context directly there); the tiny ones (no name) as usual."""
    from unittest import mock

    from transformers import (
        ByT5Tokenizer,
        Dinov2Config,
        Dinov2Model,
        SiglipVisionConfig,
        SiglipVisionModel,
        T5Config,
        T5EncoderModel,
    )

    from harmowam_core.models import encoders

    original = {name: getattr(encoders, name) for name in ("image_encoder", "text_encoder", "frame_encoder")}

    def frozen(model):
        return model.requires_grad_(False).eval()

    def image_encoder(name, image_size):
        if not name:
            return original["image_encoder"](name, image_size)
        return frozen(SiglipVisionModel(SiglipVisionConfig(**{**SIGLIP_BASE, "image_size": image_size})))

    def frame_encoder(name, image_size):
        if not name:
            return original["frame_encoder"](name, image_size)
        return frozen(Dinov2Model(Dinov2Config(**DINOV2_BASE)))

    def text_encoder(name, tiny_width=encoders.TINY_ENCODER_WIDTH):
        if not name:
            return original["text_encoder"](name, tiny_width)
        return frozen(T5EncoderModel(T5Config(**T5_BASE))), ByT5Tokenizer()

    with mock.patch.multiple(
        encoders, image_encoder=image_encoder, text_encoder=text_encoder, frame_encoder=frame_encoder
    ):
        yield


def model_config(preset: str, overrides: list[str] | None = None):
    """The preset's `ModelConfig` with `section.key=value` overrides, as a recipe's `model.overrides` applies them."""
    from harmowam_core.config import ModelSpec, apply_overrides, resolve_model

    return resolve_model(ModelSpec(preset=preset, overrides=apply_overrides({}, overrides or [])), "--set")


def build(config, device) -> tuple[Any, Any]:
    """The world model and experts of a `ModelConfig`, random weights, built directly on `device` (fp32)."""
    import torch

    from harmowam_core.models.experts import Experts, ExpertsConfig, Normalizer
    from harmowam_core.models.world_model import WorldModel, latent_frames

    wm_config = replace(config.world_model, pretrained=None)
    if wm_config.text_encoder == "umt5":  # a random T5 of UMT5-XXL's width stands in (see the module docstring)
        wm_config = replace(wm_config, text_encoder="byte-t5")
    torch.manual_seed(0)
    with torch.device(device), random_encoders():
        wm = WorldModel.from_config(wm_config)
        experts = Experts(
            ExpertsConfig(
                config.predictive_expert,
                config.reactive_expert,
                config.gate,
                action_dim=ACTION_DIM,
                state_dim=STATE_DIM,
                num_cameras=len(CAMERAS),
                wm_width=wm.hidden_size,
                wm_latent_frames=latent_frames(wm_config.num_frames, wm.codec.temporal),
                chunk=config.action_chunk,
                cameras=list(CAMERAS),
            ),
            Normalizer(
                [0.0] * ACTION_DIM,
                [0.01] * 6 + [0.5],
                [0.0] * STATE_DIM,
                [1.0] * STATE_DIM,
                [-1.0] * 7,
                [1.0] * 7,
                state_change_std=[0.01] * STATE_DIM,  # read by a predictive expert with obs_steps 2 (tiny)
            ),
        )
    return wm, experts


def parameter_rows(report: Report, wm, experts) -> None:
    from harmowam_core.models.world_model import parameter_count as n

    frozen = experts.predictive._frozen
    pred, react = experts.predictive, experts.reactive
    # the paper preset's frozen SigLIP and DINOv2, or the tiny preset's convolutional encoders (trained, and
    # counted in their expert's row too)
    image = (
        ("  SigLIP", n(frozen["image"]), "frozen")
        if "image" in frozen
        else ("  image CNN", n(pred.image_net), "trained")
    )
    dino = (
        ("  DINOv2", n(react.dino), "frozen")
        if react.dino is not None
        else ("  frame CNN", n(react.frame_net), "trained")
    )
    parts = [
        ("world model: transformer", n(wm.transformer), "trained in stage 1"),
        ("world model: VAE", n(wm.codec), f"frozen; {type(wm.codec).__name__}"),
        ("world model: text encoder", n(wm.text_encoder), "frozen; stand-in for UMT5 (cached per instruction)"),
        ("predictive expert (DiT)", n(pred), f"{experts.config.predictive.num_layers} blocks"),
        image,
        ("  T5", n(frozen["text"]), "frozen"),
        ("reactive expert (decoder)", n(react), ""),
        dino,
        ("gate", n(experts.gate), ""),
    ]
    for name, value, notes in parts:
        report.add("parameters", f"parameters: {name}", count(value), notes=notes)
    report.data["parameters"] = {name.strip(): value for name, value, _ in parts}


# ------------------------------------------------------------------------------------------------ training
def train_step(model: Any, loss_fn: Callable[[], Any], device, precision: str, steps: int, meter: Meter) -> dict:
    """`steps` optimiser steps of `model` as the training loop takes them: AdamW over the parameters that train,
    the loss under bf16 autocast (fp32 weights), gradients clipped to 1.0. Returns the last step's seconds, the
    peak GPU memory over all of them (optimiser state included), what was allocated before and the last loss.
    The optimiser state and the gradients are dropped afterwards, also when a step fails (out of memory)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
    model.train()
    before = meter.allocated_gib()
    meter.start()
    seconds, loss = 0.0, float("nan")
    try:
        for _ in range(steps):
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = loss_fn()
            out.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss = float(out.detach())
            del out
            meter.sync()
            seconds = time.perf_counter() - t0
        return {"seconds": seconds, "peak_gib": meter.peak_gib(), "before_gib": before, "loss": loss}
    finally:
        optimizer.state.clear()
        del optimizer
        for p in params:
            p.grad = None
        model.eval()
        free_memory()


def world_model_loss(wm, device) -> Callable[[], Any]:
    import torch

    h, w = wm.config.resolution
    g = torch.Generator().manual_seed(1)
    video = torch.randint(0, 256, (1, wm.config.num_frames, 3, h, w), dtype=torch.uint8, generator=g)
    previous = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=g).to(device)
    pad = torch.zeros(1, wm.config.num_frames, dtype=torch.bool)
    return lambda: wm(video.to(device), [INSTRUCTION], pad, previous=previous)


def experts_batch(wm, experts, device) -> dict:
    """A stage-2 batch of one window as `ExpertWindows` serves it: the frozen world model's imagined future of
    the current frame (as the world-model cache holds it), random camera images, state and actions."""
    import torch

    from harmowam_core.data.windows import future_frame_tokens
    from harmowam_core.models.world_model import frame_to_latent

    h, w = wm.config.resolution
    g = torch.Generator().manual_seed(2)
    current = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        out = wm.predict(current, [INSTRUCTION], generator=torch.Generator(device=device).manual_seed(0))
    frame_latent = frame_to_latent(wm.config.num_frames, wm.codec.temporal)
    chunk, size = experts.config.chunk, experts.config.predictive.image_size
    images = torch.randint(0, 256, (1, len(CAMERAS), 3, size, size), dtype=torch.uint8, generator=g)
    return {
        "images": images,
        "previous_images": images.clone(),
        "state": torch.randn(1, STATE_DIM, generator=g),
        "state_change": torch.randn(1, STATE_DIM, generator=g) * 0.01,
        "instruction": [INSTRUCTION],
        "action": torch.randn(1, chunk, ACTION_DIM, generator=g) * 0.01,
        "action_is_pad": torch.zeros(1, chunk, dtype=torch.bool),
        "interaction": torch.tensor([1]),
        "frames": (out.frames[:, 1 : chunk + 1] * 255).round().to(torch.uint8),
        "wm_hidden": out.hidden,
        "wm_frame_tokens": future_frame_tokens(out.hidden, frame_latent, chunk),
    }


# ------------------------------------------------------------------------------------------------ closed loop
def import_policy():
    """`HarmoWAMPolicy` (imports without PyAV: the video module imports it only when a video is read or written)."""
    from harmowam_core.policy.policy import HarmoWAMPolicy

    return HarmoWAMPolicy


def instant_station(obs):
    """A station (`envs.base.Station`) that returns one fixed observation at once, on reset and on every step:
    the policy alone sets the pace."""
    from harmowam_core.envs.base import Station

    class InstantStation(Station):
        instruction, num_arms, stage_names = INSTRUCTION, 1, ["stage"]

        def reset(self, seed=None, ood="none"):
            return obs

        def step(self, action, images=True):
            return obs

        def stage_success(self) -> list[bool]:
            return [False]

    return InstantStation()


def observation(wm) -> Any:
    import numpy as np

    from harmowam_core.envs.base import Observation

    h, w = wm.config.resolution
    rng = np.random.default_rng(3)
    images = {c: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for c in CAMERAS}
    return Observation(images=images, state=np.zeros(STATE_DIM, dtype=np.float32), instruction=INSTRUCTION)


def make_policy(policy_cls, wm, experts, **kwargs):
    from harmowam_core.config import load_recipe

    recipe = load_recipe("stack_cans")  # a single-arm station with the cameras of CAMERAS
    assert [c.name for c in recipe.cameras] == CAMERAS
    return policy_cls(wm, experts, recipe, router="gate", **kwargs)


def plan_latency(policy, obs, repeats: int, meter: Meter) -> float:
    """Median seconds of one plan, after one warm-up plan."""
    policy.plan(obs.images, obs.state, obs.instruction)
    times = []
    for _ in range(repeats):
        meter.start()
        policy.plan(obs.images, obs.state, obs.instruction)
        times.append(meter.seconds())
    return statistics.median(times)


def closed_loop(policy, station, actions: int, meter: Meter) -> float:
    """Executed actions per second over `actions` steps, after a warm-up plan outside the timing."""
    obs = station.reset()
    policy.reset()
    policy.act(obs)
    policy.reset()
    meter.start()
    for _ in range(actions):
        obs = station.step(policy.act(obs))
    return actions / meter.seconds()


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, cpu (needs --allow-cpu) or meta")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a CUDA device (a smoke run)")
    parser.add_argument("--wm-steps", type=int, nargs="+", default=[3, 5, 10, 50], help="world-model denoising steps")
    parser.add_argument("--repeats", type=int, default=3, help="timed plans per step count (the median is shown)")
    parser.add_argument("--actions", type=int, default=48, help="executed actions per closed-loop run")
    parser.add_argument("--train-steps", type=int, default=2, help="optimiser steps per stage (the last is timed)")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "no"], help="training autocast")
    parser.add_argument(
        "--budget-s", type=float, default=240.0, help="checks not started this many seconds in are skipped"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a preset value, as a recipe's model.overrides (e.g. world_model.num_layers=15); repeatable",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    build_only = args.device == "meta"
    if not build_only and not args.allow_cpu and not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device (torch {torch.__version__} sees none); run it on a GPU machine "
            "(benchmarks/gpu_check.sh), or pass --preset tiny --device cpu --allow-cpu for a smoke run",
            file=sys.stderr,
        )
        return 2
    from harmowam_core.errors import HarmoWAMError

    try:
        config = model_config(args.preset, args.set)
    except HarmoWAMError as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        args.device = "cpu"  # --allow-cpu without a CUDA device
    device = torch.device(args.device)
    if device.type == "cpu" and not args.allow_cpu:
        print("gpu_check: --device cpu is a smoke run: pass --allow-cpu too", file=sys.stderr)
        return 2
    if device.type == "cuda":
        if device.index is not None:  # set_device needs an index; plain "cuda" is the current device
            torch.cuda.set_device(device)
        name = torch.cuda.get_device_name(device)
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        where = f"{name} ({total:.0f} GiB)"
    else:
        where = f"cpu (torch threads: {torch.get_num_threads()})" if device.type == "cpu" else "meta (no memory)"
    import diffusers
    import transformers

    preset = args.preset + (" (with --set)" if args.set else "")
    versions = f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}"
    report = Report(f"gpu_check: preset {preset} on {where}; {versions}")
    report.data.update(preset=args.preset, overrides=args.set, device=where, versions=versions, failed=report.failed)
    meter = Meter(device)

    progress(f"building the {args.preset} preset on {device} ...")
    built = None
    with report.attempt("build", "build (random weights)"):
        meter.start()
        built = build(config, device)
        seconds = meter.seconds()
        report.add("build", "build (random weights)", f"{seconds:.1f} s", gib(meter.peak_gib()), "fp32, on the device")
        report.data["build_seconds"] = seconds
    if built is not None:
        wm, experts = built
        parameter_rows(report, wm, experts)
        if not build_only:
            run_checks(report, args, device, meter, wm, experts, deadline=STARTED + args.budget_s)
    report.add("total", "total wall time", f"{time.perf_counter() - STARTED:.1f} s")
    report.print()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.data, indent=2))
    if report.failed:
        print(f"gpu_check: {len(report.failed)} check(s) failed: {', '.join(report.failed)}", file=sys.stderr)
        return 1
    return 0


def run_checks(report: Report, args, device, meter: Meter, wm, experts, deadline: float) -> None:
    import torch

    def out_of_time(section: str, check: str) -> bool:
        if time.perf_counter() < deadline:
            return False
        report.add(section, check, "skipped", notes=f"past the time budget (--budget-s {args.budget_s:.0f})")
        return True

    precision = "bf16 autocast" if args.precision == "bf16" else "fp32"
    progress("stage 1: world-model training step ...")
    with report.attempt("train", "stage 1 step: world model"):
        r = train_step(wm, world_model_loss(wm, device), device, args.precision, args.train_steps, meter)
        report.add(
            "train", "stage 1 step: world model", f"{r['seconds']:.2f} s", gib(r["peak_gib"]),
            f"batch 1, {wm.config.num_frames} frames {wm.config.resolution[0]}x{wm.config.resolution[1]}; "
            f"fp32 weights, {precision}, AdamW; loss {r['loss']:.3f}",
        )  # fmt: skip
        report.data["stage1"] = r

    # The world model is frozen from here on: bf16 weights, as deployment and the stage-2 cache run it.
    wm.requires_grad_(False).eval()
    frozen_dtype = ""
    if device.type == "cuda":
        wm.transformer.to(torch.bfloat16)
        frozen_dtype = " (bf16)"
    free_memory()

    progress("stage 2: experts training step on the frozen world model ...")
    with report.attempt("train", "stage 2 step: experts"):
        batch = experts_batch(wm, experts, device)
        r = train_step(experts, lambda: experts(batch)["loss"], device, args.precision, args.train_steps, meter)
        resident = f" ({gib(r['before_gib'])} allocated before the step)" if r["before_gib"] is not None else ""
        report.add(
            "train", "stage 2 step: experts", f"{r['seconds']:.2f} s", gib(r["peak_gib"]),
            f"batch 1; world model frozen{frozen_dtype} and resident{resident}; fp32 weights, {precision}, AdamW",
        )  # fmt: skip
        report.data["stage2"] = r
        batch = None  # frees the imagined future before the plans
    free_memory()

    policy_cls = None
    with report.attempt("plan", "import HarmoWAMPolicy"):
        policy_cls = import_policy()
    if policy_cls is None:
        return
    obs = observation(wm)
    report.data["plan_seconds"] = {}
    for steps in args.wm_steps:
        progress(f"plan with {steps} world-model steps ...")
        if out_of_time("plan", f"plan, {steps} world-model steps"):
            continue
        with report.attempt("plan", f"plan, {steps} world-model steps"):
            with make_policy(policy_cls, wm, experts, denoising_steps=steps) as policy:
                seconds = plan_latency(policy, obs, args.repeats, meter)
            report.add(
                "plan", f"plan, {steps} world-model steps", f"{1000 * seconds:.0f} ms", gib(meter.peak_gib()),
                f"median of {args.repeats}; world model + gate + both experts, batch 1",
            )  # fmt: skip
            report.data["plan_seconds"][steps] = seconds

    station = instant_station(obs)
    report.data["actions_per_second"] = {}
    for mode in ("sync", "async"):
        progress(f"closed loop, {mode} ...")
        if out_of_time("loop", f"closed loop, {mode}"):
            continue
        with report.attempt("loop", f"closed loop, {mode}"):
            with make_policy(policy_cls, wm, experts, async_inference=mode == "async") as policy:
                rate = closed_loop(policy, station, args.actions, meter)
                notes = f"chunk {policy.chunk}, executes {policy.execute_steps}"
                notes += f", plans {policy.lead} ahead" if mode == "async" else ""
                notes += f"; {policy.denoising_steps} world-model steps; {args.actions} actions, instant station"
            report.add("loop", f"closed loop, {mode}", f"{rate:.1f} actions/s", gib(meter.peak_gib()), notes)
            report.data["actions_per_second"][mode] = rate


if __name__ == "__main__":
    sys.exit(main())
