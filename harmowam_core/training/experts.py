"""Stage 2: the predictive expert, the reactive expert and the gate, trained on a frozen world model.

    trainer = ExpertsTrainer(recipe, "data/stack_cans", "runs/stack_cans/wm/model", "runs/stack_cans/experts")
    result = trainer.run()
    result.report.gate_accuracy        # held-out frame accuracy of the gate
    result.report.errors               # {"predictive": {"transit": ..., "interaction": ..., "all": ...}, ...}

The world model is run once per training window (every frame of every episode) before training, and its
outputs (the 12 imagined future frames as uint8 and the feature block's hidden tokens as float16) are cached
on disk under `out/cache/`, keyed by the world model's weights, the dataset and the sampling settings: stage 2
never runs the world model again, across epochs or on `--resume`. Camera images are decoded once into memory
at the encoders' resolution.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import PartialState
from torch.utils.data import Dataset

from harmowam_core.action_space import absolute_targets, state_change
from harmowam_core.config import Recipe
from harmowam_core.data.reader import DatasetReader, split_episodes
from harmowam_core.data.windows import ClipDataset, ExpertBatch, expert_inputs, previous_frame, resize_frames, window
from harmowam_core.errors import HarmoWAMError
from harmowam_core.models.experts import Experts, ExpertsConfig, Normalizer
from harmowam_core.models.world_model import (
    WorldModelInterface,
    frame_to_latent,
    latent_frames,
    load_world_model,
    world_model_dir,
)
from harmowam_core.timing import Progress
from harmowam_core.training.cache import WorldModelCache
from harmowam_core.training.loop import StepLog, TrainLoop, open_training_run, parse_log_with
from harmowam_core.training.reports import ExpertsReport, evaluate_experts
from harmowam_core.training.world_model import world_model_camera

SNAPSHOTS = "snapshots"  # the run's snapshots/step_N/ (`train_experts.snapshot_every`)
SNAPSHOT_META = "run.json"  # in each snapshot: its world model and step


# ------------------------------------------------------------------------------------------------ data
def state_changes_of(reader: DatasetReader) -> np.ndarray:
    """(frames, state_dim) float32: every frame's `action_space.state_change` since the frame `previous_frame`
    names in its episode (zeros at an episode's first frame): what a predictive expert with `obs_steps` 2 reads
    beside the state."""
    before = np.concatenate(
        [start + np.array([previous_frame(t) for t in range(length)], dtype=np.int64)
         for start, length in zip(reader.starts, reader.lengths, strict=True)]
    )  # fmt: skip
    return state_change(reader.state, reader.state[before])


class ExpertWindows(Dataset):
    """Stage-2 windows, one per frame of the given episodes (the trainer keeps every `window_stride`-th).

    Item: images (cams, 3, S, S) uint8, the current frame of every camera (its `crops` box, resized to S);
    previous_images, the frame before (the first frame itself at an episode's start); state; instruction; action
    (12, A) and action_is_pad (12,), true past the episode's end and in the frames whose actions are not the
    expert's (`DatasetReader.detour`: its recovery detours, a policy's steps before a takeover); interaction
    (the current frame's label, -1 unlabelled); frames (12, 3, h, w) uint8, the imagined future (or the real one
    with `real_frames`); wm_hidden (N, D) and wm_frame_tokens (12, n, D), the world model's hidden tokens whole and
    regrouped per future frame.
    """

    def __init__(
        self,
        reader: DatasetReader,
        clips: ClipDataset,
        cache: WorldModelCache,
        cameras: list[str],
        image_size: int,
        chunk: int,
        frame_latent: torch.Tensor,
        real_frames: bool = False,
        on_progress: Progress | None = None,
        actions: np.ndarray | None = None,
        state_changes: np.ndarray | None = None,
        crops: dict[str, list[float]] | None = None,
    ):
        """`actions`: what the experts learn, one row per dataset frame (default the dataset's `action`; the
        absolute targets of `action_space.absolute_targets` when the model predicts those). `state_changes`:
        `state_changes(reader)`, one row per dataset frame (computed here when not given). `crops`: camera name ->
        the box of its frames the images show (`predictive_expert.crops`; `resize_frames`)."""
        self.reader, self.clips, self.cache, self.chunk, self.cameras = reader, clips, cache, chunk, list(cameras)
        self.actions = reader.action if actions is None else actions
        self.state_changes = state_changes_of(reader) if state_changes is None else state_changes
        self.index = clips.index
        self.real_frames, self.frame_latent = real_frames, frame_latent
        self.images: dict[int, torch.Tensor] = {}
        size, boxes = [image_size, image_size], crops or {}
        for i, ep in enumerate(clips.episodes):  # (frames, cams, 3, S, S), decoded once
            every = np.arange(reader.lengths[ep])
            per_camera = [resize_frames(reader.frames(ep, cam, every), size, boxes.get(cam)) for cam in cameras]
            self.images[ep] = torch.stack(per_camera, dim=1)
            if on_progress is not None:
                on_progress("images", i + 1, len(clips.episodes), f"episode {ep}")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> ExpertBatch:
        ep, t = self.index[i]
        reader, g = self.reader, int(self.reader.starts[ep]) + t
        steps, is_pad = window(t, int(reader.lengths[ep]), self.chunk)
        row = self.cache.row[(ep, t)]
        if self.real_frames:
            frames = self.clips.clip(ep, t)[0][1 : self.chunk + 1]
        else:
            frames = torch.from_numpy(np.array(self.cache.frames[row, : self.chunk]))
        batch = expert_inputs(
            self.images[ep][t],
            self.images[ep][previous_frame(t)],
            torch.from_numpy(reader.state[g]),
            self.clips.instruction(ep, t),
            frames,
            torch.from_numpy(np.array(self.cache.hidden[row])),
            self.frame_latent,
            torch.from_numpy(self.state_changes[g]),
        )
        batch["action"] = torch.from_numpy(np.ascontiguousarray(self.actions[reader.episode_slice(ep)][steps]))
        batch["action_is_pad"] = torch.from_numpy(is_pad | reader.detour[g - t + steps])  # detour actions: no loss
        batch["interaction"] = torch.tensor(int(reader.interaction[g]))
        return batch


INPUTS_FILE = "inputs.png"  # in the run directory: what the experts read (`save_input_sheet`)
SHEET_PANEL = 128  # pixels per image on the sheet
SHEET_FRAMES = (1, 4, 8, 12)  # the imagined future frames shown


def save_input_sheet(windows: ExpertWindows, path: Path, rows: int = 3) -> Path:
    """What the experts read (issue 19, cause 6), as one PNG: a row per window (`rows` windows evenly spaced over
    the first episode of `windows`), each camera as the predictive expert and the gate read it (cropped and
    resized as `predictive_expert.crops` and `image_size` say, before the training's random shifts), then the
    future frames `SHEET_FRAMES` (those within the action chunk) the reactive expert reads, imagined (or real,
    with `reactive_on_real_frames`). Every image is scaled to SHEET_PANEL pixels
    (nearest neighbour, so that the pixels the model reads stay visible). Returns `path`."""
    from PIL import Image, ImageDraw

    from harmowam_core.evaluation.video import BANNER, label_font

    episode = windows.index[0][0]
    mine = [i for i, (ep, _) in enumerate(windows.index) if ep == episode]
    picks = [mine[int(k)] for k in np.linspace(0, len(mine) - 1, rows)]
    shown = [k for k in SHEET_FRAMES if k <= windows.chunk] or [windows.chunk]
    future = "real" if windows.real_frames else "imagined"
    names = list(windows.cameras) + [f"{future} +{k}" for k in shown]
    sheet = Image.new("RGB", (len(names) * SHEET_PANEL, BANNER // 2 + rows * SHEET_PANEL), (20, 20, 20))
    draw, font = ImageDraw.Draw(sheet), label_font()
    for col, name in enumerate(names):
        draw.text((col * SHEET_PANEL + 4, 2), name, fill=(235, 235, 235), font=font)
    for row, i in enumerate(picks):
        batch = windows[i]
        frames = [batch["frames"][k - 1] for k in shown]
        for col, image in enumerate([*batch["images"], *frames]):
            panel = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((SHEET_PANEL, SHEET_PANEL), Image.NEAREST)
            sheet.paste(panel, (col * SHEET_PANEL, BANNER // 2 + row * SHEET_PANEL))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


# What a resumed run must keep: settings that change what the experts learn or read without changing any
# parameter's shape (a changed shape is refused by `TrainLoop.resume`); (section or None, key) of the model config.
RESUME_KEPT = ((None, "action_targets"), ("predictive_expert", "crops"), ("predictive_expert", "image_size"))


def check_resumed_settings(out: Path, recipe: Recipe) -> None:
    """Raise HarmoWAMError, one line naming the key, when `recipe` sets one of RESUME_KEPT other than the run in
    `out` was trained with (its `recipe.yaml`; nothing to check without one, and a key the file predates is not
    checked): a resumed model would go on learning other targets, or from other images, than its first steps."""
    saved = out / "recipe.yaml"
    if not saved.is_file():
        return
    then = (yaml.safe_load(saved.read_text()) or {}).get("model") or {}
    now = asdict(recipe.model_config)
    for section, key in RESUME_KEPT:
        before = then if section is None else then.get(section) or {}
        current = now if section is None else now[section]
        if key in before and before[key] != current[key]:
            name = key if section is None else f"{section}.{key}"
            raise HarmoWAMError(
                f"{out} was trained with model.overrides.{name}={before[key]} and this recipe sets {current[key]}: "
                "resuming would mix the two; set it back (--set), or train into a new --out"
            )


# ------------------------------------------------------------------------------------------------ training
@dataclass
class ExpertsRun:
    out: Path
    model_dir: Path
    steps: int
    resumed_from: int
    train_windows: int
    held_out_episodes: list[int]
    report: ExpertsReport | None


class ExpertsTrainer:
    """Checks the run on construction (dataset, labels, world model, output directory, step cap), before
    anything heavy; `run` fills the world-model cache, trains and writes the held-out report."""

    def __init__(
        self,
        recipe: Recipe,
        data: str | Path,
        wm: str | Path,
        out: str | Path,
        resume: bool = False,
        max_steps: int | None = None,
        use_wm_latents: bool = True,
        log_with: str | list[str] | None = None,
    ):
        self.recipe, self.out, self.resume, self.max_steps = recipe, Path(out), resume, max_steps
        self.use_wm_latents = use_wm_latents
        self.log_with = parse_log_with(log_with)  # the experiment trackers (accelerate's log_with); none by default
        self.reader = open_training_run(data, self.out, resume, max_steps, recipe.data_mapping())
        if not self.reader.is_labelled:
            raise HarmoWAMError(
                f"{self.reader.root}: no transit/interaction labels for the gate; run `harmowam label "
                f"{self.reader.root}` first"
            )
        if not self.reader.native_actions and self.reader.spec.action_dim != recipe.action_dim:
            raise HarmoWAMError(
                f"{self.reader.root}: actions have {self.reader.spec.action_dim} numbers but the {recipe.arms}-arm "
                f"recipe '{recipe.name}' expects {recipe.action_dim}"
            )
        self.camera = world_model_camera(recipe)
        if self.camera not in self.reader.cameras:
            raise HarmoWAMError(f"{self.reader.root}: no camera '{self.camera}' for the world model")
        if resume:
            check_resumed_settings(self.out, recipe)
        crops = recipe.model_config.predictive_expert.crops or {}
        unknown = [name for name in crops if name not in self.reader.cameras]
        if unknown:
            raise HarmoWAMError(
                f"{self.reader.root}: model.overrides.predictive_expert.crops names {', '.join(unknown)}, not a camera "
                f"of the dataset ({', '.join(self.reader.cameras)}); map it with --set data.cameras.ROLE=KEY"
            )
        self.wm_dir = world_model_dir(wm)  # the model directory, also from train-wm's run directory
        self.train_episodes, self.held_out = split_episodes(
            self.reader.num_episodes, max(1, recipe.train_experts.held_out_episodes)
        )
        spec = recipe.train_experts
        self.steps = spec.steps if max_steps is None else min(spec.steps, max_steps)
        self.targets = self.reader.action  # what the experts learn: the deltas, or their absolute targets
        # A dataset recorded elsewhere (not 7 delta numbers per arm) is learnt as it is, at its own dimension.
        self.action_targets = "delta" if self.reader.native_actions else recipe.model_config.action_targets
        # [x, y, z, roll, pitch, yaw, closure] per arm: what `Normalizer.bound_rotation` may clamp
        self.pose_state = not self.reader.native_actions and self.reader.spec.state_dim == recipe.action_dim
        if recipe.model_config.predictive_expert.gripper_head and self.reader.native_actions:
            raise HarmoWAMError(
                f"{self.reader.root}: the actions are not 7 numbers per arm with the gripper last, so there is no "
                "gripper command for model.overrides.predictive_expert.gripper_head; set it to false"
            )
        if self.action_targets in ("absolute", "pose"):
            if not self.pose_state:
                raise HarmoWAMError(
                    f"{self.reader.root}: {self.action_targets} action targets need a state of {recipe.action_dim} "
                    f"numbers (7 per arm: position, euler angles, gripper) but the dataset's has "
                    f"{self.reader.spec.state_dim};"
                    " set model.overrides.action_targets=delta"
                )
            pose = self.action_targets == "pose"
            self.targets = absolute_targets(self.reader.state, self.reader.action, rotation=pose)

    @cached_property
    def state_changes(self) -> np.ndarray:
        """`state_changes_of` the dataset, computed once for the training and held-out windows and the
        normalisation."""
        return state_changes_of(self.reader)

    def build_experts(self, wm: WorldModelInterface, normalizer: Normalizer) -> Experts:
        recipe, config = self.recipe, self.recipe.model_config
        spec = recipe.train_experts
        experts_config = ExpertsConfig(
            predictive=config.predictive_expert,
            reactive=config.reactive_expert,
            gate=config.gate,
            action_dim=self.reader.spec.action_dim,
            state_dim=self.reader.spec.state_dim,
            num_cameras=len(self.reader.cameras),
            wm_width=wm.hidden_size,
            wm_latent_frames=latent_frames(wm.config.num_frames, wm.codec.temporal),
            chunk=config.action_chunk,
            use_wm_latents=self.use_wm_latents,
            action_targets=self.action_targets,
            cameras=list(self.reader.cameras),
            lambda_pred=spec.lambda_pred,
            lambda_react=spec.lambda_react,
        )
        return Experts(experts_config, normalizer)

    def _windows(self, wm: WorldModelInterface, episodes: list[int], on_progress: Progress | None) -> ExpertWindows:
        recipe, spec, reader = self.recipe, self.recipe.train_experts, self.reader
        config = wm.config
        clips = ClipDataset(reader, self.camera, episodes, config.resolution, config.num_frames)
        detour = reader.detour  # a window starting in a detour (or a takeover's policy steps) would teach their actions
        clips.index = [
            (ep, t) for ep, t in clips.index if t % spec.window_stride == 0 and not detour[reader.starts[ep] + t]
        ]
        steps = config.denoising_steps
        key = WorldModelCache.key(self.wm_dir, reader, episodes, steps, spec.seed, spec.window_stride)
        cache = WorldModelCache.build(self.out / "cache" / key, wm, clips, steps, spec.seed, on_progress)
        frame_latent = frame_to_latent(config.num_frames, wm.codec.temporal)
        return ExpertWindows(
            reader,
            clips,
            cache,
            reader.cameras,
            recipe.model_config.predictive_expert.image_size,
            recipe.model_config.action_chunk,
            frame_latent,
            real_frames=spec.reactive_on_real_frames,
            on_progress=on_progress,
            actions=self.targets,
            state_changes=self.state_changes,
            crops=recipe.model_config.predictive_expert.crops,
        )

    def run(self, on_log: Callable[[StepLog], None] | None = None, on_progress: Progress | None = None) -> ExpertsRun:
        recipe, out, reader, spec = self.recipe, self.out, self.reader, self.recipe.train_experts
        torch.manual_seed(spec.seed)
        wm = load_world_model(self.wm_dir)
        with PartialState().main_process_first():  # one process fills the cache, the others then read it
            train_set = self._windows(wm, self.train_episodes, on_progress)
            held_set = self._windows(wm, self.held_out, on_progress)
        frames = np.concatenate(
            [np.arange(reader.episode_slice(e).start, reader.episode_slice(e).stop) for e in self.train_episodes]
        )
        frames = frames[~reader.detour[frames]]  # a detour's (or a policy's) actions are never a target
        deltas = reader.action[frames] if self.action_targets in ("absolute", "pose") else None
        changes = self.state_changes[frames]
        normalizer = Normalizer.from_arrays(self.targets[frames], reader.state[frames], deltas, changes)
        if not self.pose_state:  # a state recorded elsewhere (joints, say): no rotation numbers to clamp
            normalizer.state_min = normalizer.state_max = None
        experts = self.build_experts(wm, normalizer)
        run = {
            "stage": "experts",
            "data": str(reader.root),
            "world_model": str(self.wm_dir),
            "use_wm_latents": self.use_wm_latents,
            "action_targets": self.action_targets,
            "max_steps": self.max_steps,
        }
        loop = TrainLoop(
            spec, out, experts, lambda model, batch: model(batch), train_set, max_steps=self.max_steps,
            log_with=self.log_with, config={**recipe.to_dict(), "run": run}, run_name="experts",
        )  # fmt: skip
        start = loop.resume() if self.resume else 0  # before the recipe is rewritten: a refused resume keeps it
        if loop.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            (out / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
            save_input_sheet(train_set, out / INPUTS_FILE)

        def snapshot(loop: TrainLoop) -> None:  # every process: FSDP gathers the shards
            model = loop.trained_model(build=lambda: self.build_experts(wm, normalizer))
            if loop.is_main_process:
                where = out / SNAPSHOTS / f"step_{loop.step}"
                model.save_pretrained(where)
                # what `harmowam export --snapshot` needs of a run stopped before its end (no report.json yet)
                meta = {"world_model": str(self.wm_dir.resolve()), "step": loop.step}
                (where / SNAPSHOT_META).write_text(json.dumps(meta))

        loop.run(on_log=on_log, hooks=[(spec.snapshot_every, snapshot)])
        model = loop.trained_model(build=lambda: self.build_experts(wm, normalizer))
        report = None
        if loop.is_main_process:
            model.save_pretrained(out / "model")
            report = evaluate_experts(
                model,
                held_set,
                recipe.gate.threshold,
                batch_size=spec.batch_size,
                seed=spec.seed,
                on_progress=on_progress,
            )
            meta = {"world_model": str(self.wm_dir.resolve()), "steps": loop.step, **asdict(report)}
            (out / "report.json").write_text(json.dumps(meta, indent=2))
        loop.accelerator.wait_for_everyone()
        return ExpertsRun(
            out=out,
            model_dir=out / "model",
            steps=loop.step,
            resumed_from=start,
            train_windows=len(train_set),
            held_out_episodes=self.held_out,
            report=report,
        )
