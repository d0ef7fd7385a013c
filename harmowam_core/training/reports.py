"""Held-out reports of the two training stages.

- Stage 1 (`evaluate`, `write_preview`): the world model's per-frame PSNR on held-out clips against the baseline
  that copies the current frame, and preview videos of the real future beside the predicted one.
- Stage 2 (`evaluate_experts`): the gate's frame accuracy and each expert's action error on transit frames,
  interaction frames and all frames (appendix D.2's split, offline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from harmowam_core.data.video import VideoEncoder
from harmowam_core.data.windows import ClipDataset
from harmowam_core.errors import HarmoWAMError
from harmowam_core.models.experts import Experts
from harmowam_core.models.world_model import WorldModelInterface
from harmowam_core.timing import Progress

if TYPE_CHECKING:  # stage 2 imports the report from here
    from harmowam_core.training.experts import ExpertWindows


EVAL_CLIPS = 64  # held-out clips the final evaluation scores


PREVIEW_CLIPS = 2


LATE_FROM = 7  # "later" future frames: 7-13, counting the current frame as frame 1
MOVING_ABOVE = 0.05  # a pixel "moves" in future frame k when a channel differs from the current frame by more


# ------------------------------------------------------------------------------------------------ evaluation
@dataclass
class Evaluation:
    """Per-frame PSNR (dB) on held-out clips; index k is frame k + 2 (frame 1 is the given current frame)."""

    model_psnr: list[float]
    copy_psnr: list[float]
    clips: int
    denoising_steps: int
    # the same on the pixels that move (MOVING_ABOVE), the arm and the objects, without the static background
    # that dominates whole-frame PSNR (issue 19, cause 7); the squared errors of every clip's moving pixels pooled
    moving_model_psnr: list[float | None] = field(default_factory=list)
    moving_copy_psnr: list[float | None] = field(default_factory=list)
    moving_share: list[float] = field(default_factory=list)  # the fraction of pixels that move, per frame

    def late(self, scores: list[float | None]) -> float | None:
        """The mean over frames 7-13 (of those scored)."""
        values = [v for v in scores[LATE_FROM - 2 :] if v is not None]
        return float(np.mean(values)) if values else None

    @property
    def late_gain(self) -> float:
        """Mean PSNR gain of the prediction over copying the current frame, frames 7-13."""
        return self.late(self.model_psnr) - self.late(self.copy_psnr)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR per leading index of [0, 1] images (..., 3, H, W)."""
    mse = ((a.float() - b.float()) ** 2).mean(dim=(-3, -2, -1)).clamp(min=1e-10)
    return 10.0 * torch.log10(1.0 / mse)


def moving_errors(predicted: torch.Tensor, real: torch.Tensor, above: float = MOVING_ABOVE) -> tuple:
    """Squared errors on the pixels that move: `real` (B, T, 3, H, W) in [0, 1] with the current frame first,
    `predicted` alike. A pixel of future frame k moves when any channel differs from the current frame's by more
    than `above`. Returns, per future frame (T-1,), the summed squared error of `predicted` and of the copied
    current frame on those pixels and the number of (pixel, channel) values summed: three float64 tensors."""
    future = real[:, 1:]
    moving = (future - real[:, :1]).abs().amax(dim=2, keepdim=True) > above  # (B, T-1, 1, H, W)
    weight = moving.expand_as(future).double()
    model = (((predicted[:, 1:] - future) ** 2).double() * weight).sum(dim=(0, 2, 3, 4))
    copy = (((real[:, :1] - future) ** 2).double() * weight).sum(dim=(0, 2, 3, 4))
    return model, copy, weight.sum(dim=(0, 2, 3, 4))


def clip_starts(dataset: ClipDataset, count: int) -> list[tuple[int, int]]:
    """Up to `count` clips spread evenly over the dataset's episodes, each wholly inside its episode."""
    whole = [(ep, t) for ep, t in dataset.index if t + dataset.num_frames <= int(dataset.reader.lengths[ep])]
    if not whole:
        return []
    picks = np.linspace(0, len(whole) - 1, num=min(count, len(whole))).round().astype(int)
    return [whole[i] for i in dict.fromkeys(picks.tolist())]


def _predict_clips(wm: WorldModelInterface, dataset: ClipDataset, starts, batch_size: int, steps: int, seed: int):
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
    wm: WorldModelInterface,
    dataset: ClipDataset,
    clips: int = EVAL_CLIPS,
    batch_size: int = 8,
    steps: int | None = None,
    seed: int = 0,
    on_progress: Progress | None = None,
) -> Evaluation:
    """Per-future-frame PSNR of the prediction and of the copy-the-current-frame baseline."""
    steps = wm.config.denoising_steps if steps is None else steps
    starts = clip_starts(dataset, clips)
    if not starts:
        raise HarmoWAMError(f"the held-out episodes are shorter than {dataset.num_frames} frames: nothing to score")
    was_training = wm.training
    wm.eval()
    model_scores, copy_scores = [], []
    moving = torch.zeros(3, dataset.num_frames - 1, dtype=torch.float64)  # model, copy, count
    for real, predicted in _predict_clips(wm, dataset, starts, batch_size, steps, seed):
        model_scores.append(psnr(predicted[:, 1:], real[:, 1:]))
        copy_scores.append(psnr(real[:, :1].expand_as(real[:, 1:]), real[:, 1:]))
        moving += torch.stack(moving_errors(predicted, real))
        if on_progress is not None:
            on_progress("evaluate", sum(len(s) for s in model_scores), len(starts), "")
    wm.train(was_training)
    return Evaluation(
        model_psnr=torch.cat(model_scores).mean(0).tolist(),
        copy_psnr=torch.cat(copy_scores).mean(0).tolist(),
        clips=len(starts),
        denoising_steps=steps,
        moving_model_psnr=_pooled_psnr(moving[0], moving[2]),
        moving_copy_psnr=_pooled_psnr(moving[1], moving[2]),
        moving_share=(moving[2] / (3 * len(starts) * math.prod(dataset.resolution))).tolist(),
    )


def _pooled_psnr(squared: torch.Tensor, count: torch.Tensor) -> list[float | None]:
    """PSNR (dB) of pooled squared errors per frame; None where no pixel moved."""
    mse = (squared / count.clamp(min=1)).clamp(min=1e-10)
    return [float(v) if n > 0 else None for v, n in zip(10.0 * torch.log10(1.0 / mse), count, strict=True)]


@torch.no_grad()
def write_preview(wm: WorldModelInterface, dataset: ClipDataset, path: Path, fps: int, seed: int = 0) -> Path:
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


# ------------------------------------------------------------------------------------------------ report
@dataclass
class ExpertsReport:
    """Held-out scores: the gate's frame accuracy, and each expert's action error (mean absolute error of the
    standardised actions over the chunk) on transit frames, interaction frames and all frames. "routed" takes
    each frame's chunk from the expert the gate picks."""

    episodes: list[int]
    frames: int
    gate_accuracy: float | None
    gate_threshold: float
    errors: dict[str, dict[str, float | None]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


@torch.no_grad()
def evaluate_experts(
    experts: Experts,
    windows: ExpertWindows,
    threshold: float,
    batch_size: int = 32,
    seed: int = 0,
    on_progress: Progress | None = None,
) -> ExpertsReport:
    was_training = experts.training
    experts.eval()
    generator = torch.Generator(device=experts.device).manual_seed(seed)
    norm = experts.normalizer
    per_frame: dict[str, list[torch.Tensor]] = {"predictive": [], "reactive": [], "routed": []}
    labels, probs = [], []
    for i in range(0, len(windows), batch_size):
        items = [windows[j] for j in range(i, min(i + batch_size, len(windows)))]
        batch = default_collate(items)
        out = experts.act(batch, generator=generator)
        target = norm.normalize_action(batch["action"].to(experts.device))
        keep = (~batch["action_is_pad"].to(experts.device)).float()

        p = out["p_interaction"]
        routed = torch.where((p >= threshold).view(-1, 1, 1), out["predictive"], out["reactive"])
        for name, actions in (("predictive", out["predictive"]), ("reactive", out["reactive"]), ("routed", routed)):
            err = (norm.normalize_action(actions) - target).abs().mean(-1)  # (B, chunk)
            per_frame[name].append(((err * keep).sum(1) / keep.sum(1).clamp(min=1.0)).cpu())
        labels.append(batch["interaction"])
        probs.append(p.cpu())
        if on_progress is not None:
            on_progress("evaluate", i + len(items), len(windows), "")
    experts.train(was_training)
    labels_t, probs_t = torch.cat(labels), torch.cat(probs)
    groups = {"transit": labels_t == 0, "interaction": labels_t == 1, "all": torch.ones_like(labels_t, dtype=bool)}
    errors = {}
    for name, values in per_frame.items():
        v = torch.cat(values)
        errors[name] = {g: (float(v[m].mean()) if bool(m.any()) else None) for g, m in groups.items()}
    labelled = labels_t >= 0
    accuracy = None
    if bool(labelled.any()):
        accuracy = float(((probs_t[labelled] >= threshold).long() == labels_t[labelled]).float().mean())
    return ExpertsReport(
        episodes=list(windows.clips.episodes),
        frames=len(windows),
        gate_accuracy=accuracy,
        gate_threshold=threshold,
        errors=errors,
        counts={g: int(m.sum()) for g, m in groups.items()},
    )
