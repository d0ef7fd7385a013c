"""Stage 1: train the world model on a dataset's front (single-arm) or global (dual-arm) camera.

    result = train_world_model(recipe, "data/stack_cans", "runs/stack_cans/wm")
    result.evaluation.late_gain   # dB the prediction gains over copying the current frame, frames 7-13

Clips are the current frame and the next 12 of that camera at the model's resolution (padded with the last
frame past an episode's end; padded frames do not count in the loss). The last `held_out_episodes` episodes
never train: preview videos (real future beside the predicted one) come from them at intervals, and the final
evaluation scores the prediction frame by frame (PSNR) against the real frames there, next to the baseline
that copies the current frame. The output directory holds `model/` (`WorldModel.from_pretrained`),
`checkpoints/`, `previews/step_N.mp4`, `evaluation.json` and the resolved `recipe.yaml`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import Dataset

from harmowam_core.data.reader import DatasetReader, split_episodes
from harmowam_core.data.video import VideoEncoder
from harmowam_core.errors import HarmoWAMError
from harmowam_core.models.world_model import WorldModel, resolve_checkpoint
from harmowam_core.recipes import Recipe
from harmowam_core.training.loop import StepLog, TrainLoop, open_training_run, parse_log_with

CACHE_BUDGET_BYTES = 4 << 30  # decoded clips at the model's resolution are kept in memory below this
EVAL_CLIPS = 64  # held-out clips the final evaluation scores
PREVIEW_CLIPS = 2
LATE_FROM = 7  # "later" future frames: 7-13, counting the current frame as frame 1

# on_progress(phase, completed, total, status): phases "frames", "train", "preview", "evaluate"
Progress = Callable[[str, int, int, str], None]


def world_model_camera(recipe: Recipe) -> str:
    """The camera the world model imagines: the front camera of a single arm, the global one of two."""
    return recipe.camera("front" if recipe.arms == "single" else "global").name


def resize_frames(frames: np.ndarray, size: list[int]) -> torch.Tensor:
    """(k, H, W, 3) uint8 -> (k, 3, h, w) uint8 at `size` (area averaging when shrinking)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    if list(x.shape[-2:]) == list(size):
        return x.contiguous()
    y = F.interpolate(x.float(), size=tuple(size), mode="area" if x.shape[-1] >= size[-1] else "bilinear")
    return y.round().clamp(0, 255).to(torch.uint8)


class ClipDataset(Dataset):
    """Clips of `num_frames` frames of one camera, starting at every frame of the given episodes.

    Item: video (T, 3, h, w) uint8, video_is_pad (T,) bool, previous (3, h, w) uint8 (the frame before the
    clip's first, that frame itself at an episode's start), instruction (str), episode_index, frame_index.
    Below CACHE_BUDGET_BYTES the episodes are decoded once into memory (the tiny preset on a CPU would
    otherwise spend its time decoding); above it each clip is decoded on request.
    """

    def __init__(
        self,
        reader: DatasetReader,
        camera: str,
        episodes: list[int],
        resolution: list[int],
        num_frames: int,
        cache: bool | None = None,
        on_progress: Progress | None = None,
    ):
        if camera not in reader.cameras:
            raise HarmoWAMError(f"{reader.root}: no camera '{camera}'; it has {', '.join(reader.cameras)}")
        self.reader, self.camera, self.resolution, self.num_frames = reader, camera, list(resolution), num_frames
        self.episodes = list(episodes)
        self.index = [(ep, t) for ep in self.episodes for t in range(int(reader.lengths[ep]))]
        frames = sum(int(reader.lengths[ep]) for ep in self.episodes)
        if cache is None:
            cache = frames * 3 * resolution[0] * resolution[1] <= CACHE_BUDGET_BYTES
        self._frames: dict[int, torch.Tensor] = {}
        if cache:
            for i, ep in enumerate(self.episodes):
                self._frames[ep] = resize_frames(reader.frames(ep, camera, np.arange(reader.lengths[ep])), resolution)
                if on_progress is not None:
                    on_progress("frames", i + 1, len(self.episodes), f"episode {ep}")

    def __len__(self) -> int:
        return len(self.index)

    def instruction(self, ep: int, t: int) -> str:
        tasks = self.reader.tasks
        return tasks[int(self.reader.task_index[int(self.reader.starts[ep]) + t])] if tasks else ""

    def clip(self, ep: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        last = int(self.reader.lengths[ep]) - 1
        wanted = np.arange(t, t + self.num_frames)
        idx = np.minimum(wanted, last)
        if ep in self._frames:
            video = self._frames[ep][torch.from_numpy(idx)]
        else:
            video = resize_frames(self.reader.frames(ep, self.camera, idx), self.resolution)
        return video, torch.from_numpy(wanted > last)

    def previous(self, ep: int, t: int) -> torch.Tensor:
        """(3, h, w) uint8: the frame one step before frame t (frame 0 for t = 0: nothing moved yet)."""
        t = max(0, t - 1)
        if ep in self._frames:
            return self._frames[ep][t]
        return resize_frames(self.reader.frames(ep, self.camera, np.array([t])), self.resolution)[0]

    def __getitem__(self, i: int) -> dict:
        ep, t = self.index[i]
        video, pad = self.clip(ep, t)
        return {
            "video": video,
            "video_is_pad": pad,
            "previous": self.previous(ep, t),
            "instruction": self.instruction(ep, t),
            "episode_index": ep,
            "frame_index": t,
        }


def flow_matching_loss(model, batch: dict) -> dict[str, torch.Tensor]:
    return {"loss": model(batch["video"], batch["instruction"], batch["video_is_pad"], previous=batch["previous"])}


# ------------------------------------------------------------------------------------------------ evaluation
@dataclass
class Evaluation:
    """Per-frame PSNR (dB) on held-out clips; index k is frame k + 2 (frame 1 is the given current frame)."""

    model_psnr: list[float]
    copy_psnr: list[float]
    clips: int
    denoising_steps: int

    def late(self, scores: list[float]) -> float:
        return float(np.mean(scores[LATE_FROM - 2 :]))

    @property
    def late_gain(self) -> float:
        """Mean PSNR gain of the prediction over copying the current frame, frames 7-13."""
        return self.late(self.model_psnr) - self.late(self.copy_psnr)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR per leading index of [0, 1] images (..., 3, H, W)."""
    mse = ((a.float() - b.float()) ** 2).mean(dim=(-3, -2, -1)).clamp(min=1e-10)
    return 10.0 * torch.log10(1.0 / mse)


def clip_starts(dataset: ClipDataset, count: int) -> list[tuple[int, int]]:
    """Up to `count` clips spread evenly over the dataset's episodes, each wholly inside its episode."""
    whole = [(ep, t) for ep, t in dataset.index if t + dataset.num_frames <= int(dataset.reader.lengths[ep])]
    if not whole:
        return []
    picks = np.linspace(0, len(whole) - 1, num=min(count, len(whole))).round().astype(int)
    return [whole[i] for i in dict.fromkeys(picks.tolist())]


def _predict_clips(wm: WorldModel, dataset: ClipDataset, starts, batch_size: int, steps: int, seed: int):
    """Yield (real (B, T, 3, h, w) in [0, 1], predicted frames) batch by batch, with a fixed noise seed."""
    generator = torch.Generator(device=wm.device).manual_seed(seed)
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        real = torch.stack([dataset.clip(ep, t)[0] for ep, t in chunk]).float() / 255.0
        instructions = [dataset.instruction(ep, t) for ep, t in chunk]
        previous = torch.stack([dataset.previous(ep, t) for ep, t in chunk]).float() / 255.0
        out = wm.predict(real[:, 0], instructions, steps=steps, generator=generator, previous=previous)
        yield real, out.frames.cpu()


@torch.no_grad()
def evaluate(
    wm: WorldModel,
    dataset: ClipDataset,
    clips: int = EVAL_CLIPS,
    batch_size: int = 8,
    steps: int | None = None,
    seed: int = 0,
    on_progress: Progress | None = None,
) -> Evaluation:
    """Per-future-frame PSNR of the prediction and of the copy-the-current-frame baseline."""
    steps = steps or wm.config.denoising_steps
    starts = clip_starts(dataset, clips)
    if not starts:
        raise HarmoWAMError(f"the held-out episodes are shorter than {dataset.num_frames} frames: nothing to score")
    was_training = wm.training
    wm.eval()
    model_scores, copy_scores = [], []
    for real, predicted in _predict_clips(wm, dataset, starts, batch_size, steps, seed):
        model_scores.append(psnr(predicted[:, 1:], real[:, 1:]))
        copy_scores.append(psnr(real[:, :1].expand_as(real[:, 1:]), real[:, 1:]))
        if on_progress is not None:
            on_progress("evaluate", sum(len(s) for s in model_scores), len(starts), "")
    wm.train(was_training)
    return Evaluation(
        model_psnr=torch.cat(model_scores).mean(0).tolist(),
        copy_psnr=torch.cat(copy_scores).mean(0).tolist(),
        clips=len(starts),
        denoising_steps=steps,
    )


@torch.no_grad()
def write_preview(wm: WorldModel, dataset: ClipDataset, path: Path, fps: int, seed: int = 0) -> Path:
    """An mp4 of held-out clips, one row each: the real future on the left, the predicted one on the right."""
    starts = [(ep, int(dataset.reader.lengths[ep]) // 3) for ep in dataset.episodes[:PREVIEW_CLIPS]]
    starts = [(ep, max(0, min(t, int(dataset.reader.lengths[ep]) - dataset.num_frames))) for ep, t in starts]
    was_training = wm.training
    wm.eval()
    real, predicted = next(_predict_clips(wm, dataset, starts, len(starts), wm.config.denoising_steps, seed))
    wm.train(was_training)
    grid = torch.cat([real, predicted], dim=-1)  # side by side: (B, T, 3, h, 2w)
    grid = torch.cat(list(grid), dim=-2)  # rows stacked: (T, 3, B h, 2w)
    scale = max(1, math.ceil(128 / grid.shape[-2]))  # small previews are upscaled to be watchable
    grid = F.interpolate(grid, scale_factor=scale, mode="nearest") if scale > 1 else grid
    frames = (grid * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    encoder = VideoEncoder(path, fps=fps, height=frames.shape[1], width=frames.shape[2])
    for frame in frames:
        encoder.add(frame)
    encoder.close()
    return path


# ------------------------------------------------------------------------------------------------ training
@dataclass
class WorldModelRun:
    out: Path
    model_dir: Path
    steps: int
    resumed_from: int
    train_clips: int
    held_out_episodes: list[int]
    previews: list[Path]
    evaluation: Evaluation


def build_world_model(recipe: Recipe) -> WorldModel:
    config = recipe.model_config.world_model
    if config.pretrained:
        return WorldModel.from_pretrained(resolve_checkpoint(config.pretrained), config)
    return WorldModel.from_config(config)


class WorldModelTrainer:
    """Checks the run (dataset, output directory, step cap) on construction, before anything heavy; `run`
    decodes the clips, trains, previews and evaluates."""

    def __init__(
        self,
        recipe: Recipe,
        data: str | Path,
        out: str | Path,
        resume: bool = False,
        max_steps: int | None = None,
        log_with: str | list[str] | None = None,
    ):
        self.recipe, self.out, self.resume, self.max_steps = recipe, Path(out), resume, max_steps
        self.log_with = parse_log_with(log_with)  # the experiment trackers (accelerate's log_with); none by default
        self.reader = open_training_run(data, self.out, resume, max_steps, recipe.data_mapping())
        self.camera = world_model_camera(recipe)
        if self.camera not in self.reader.cameras:
            raise HarmoWAMError(
                f"{self.reader.root}: no camera '{self.camera}' (the recipe's {recipe.arms}-arm world-model camera); "
                f"it has {', '.join(self.reader.cameras)}"
            )
        self.train_episodes, self.held_out = split_episodes(
            self.reader.num_episodes, max(1, recipe.train_wm.held_out_episodes)
        )
        spec = recipe.train_wm
        self.steps = min(spec.steps, max_steps) if max_steps else spec.steps

    def run(
        self, on_log: Callable[[StepLog], None] | None = None, on_progress: Progress | None = None
    ) -> WorldModelRun:
        recipe, out, reader, spec = self.recipe, self.out, self.reader, self.recipe.train_wm
        config = recipe.model_config.world_model
        torch.manual_seed(spec.seed)
        wm = build_world_model(recipe)
        train_set = ClipDataset(
            reader, self.camera, self.train_episodes, config.resolution, config.num_frames, on_progress=on_progress
        )
        held_set = ClipDataset(reader, self.camera, self.held_out, config.resolution, config.num_frames)
        run = {"stage": "wm", "data": str(reader.root), "camera": self.camera, "max_steps": self.max_steps}
        loop = TrainLoop(
            spec, out, wm, flow_matching_loss, train_set, max_steps=self.max_steps, log_with=self.log_with,
            config={**recipe.to_dict(), "run": run}, run_name="wm",
        )  # fmt: skip
        if loop.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            (out / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        start = loop.resume() if self.resume else 0
        previews: list[Path] = []

        def current_model() -> WorldModel | None:
            """The weights so far on the main process (gathered there under FSDP), None on the others."""
            model = loop.trained_model(build=lambda: build_world_model(recipe))
            return model if loop.is_main_process else None

        def preview(loop: TrainLoop) -> None:
            model = current_model()
            if model is not None:
                path = write_preview(model, held_set, out / "previews" / f"step_{loop.step}.mp4", reader.fps)
                previews.append(path)
                if on_progress is not None:
                    on_progress("preview", loop.step, loop.total, path.name)

        loop.run(on_log=on_log, hooks=[(spec.preview_every, preview)])
        model = current_model()
        evaluation = None
        if model is not None:  # the main process
            model.save_pretrained(out / "model")
            previews.append(write_preview(model, held_set, out / "previews" / f"step_{loop.step}.mp4", reader.fps))
            evaluation = evaluate(model, held_set, batch_size=spec.batch_size, seed=spec.seed, on_progress=on_progress)
            report = {
                "camera": self.camera,
                "held_out_episodes": self.held_out,
                "steps": loop.step,
                "frames": list(range(2, config.num_frames + 1)),
                **asdict(evaluation),
                "late_frames": f"{LATE_FROM}-{config.num_frames}",
                "late_model_psnr": evaluation.late(evaluation.model_psnr),
                "late_copy_psnr": evaluation.late(evaluation.copy_psnr),
            }
            (out / "evaluation.json").write_text(json.dumps(report, indent=2))
        loop.accelerator.wait_for_everyone()
        return WorldModelRun(
            out=out,
            model_dir=out / "model",
            steps=loop.step,
            resumed_from=start,
            train_clips=len(train_set),
            held_out_episodes=self.held_out,
            previews=previews,
            evaluation=evaluation,
        )


def train_world_model(
    recipe: Recipe,
    data: str | Path,
    out: str | Path,
    resume: bool = False,
    max_steps: int | None = None,
    on_log=None,
    on_progress: Progress | None = None,
) -> WorldModelRun:
    return WorldModelTrainer(recipe, data, out, resume, max_steps).run(on_log, on_progress)
