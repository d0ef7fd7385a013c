"""Training windows and the stage-2 batch: the one rule both training stages and the closed-loop policy follow.

    idx, is_pad = window(t, length, 13)      # frames t..t+12 of an episode, clamped at its last frame
    clips = ClipDataset(reader, "front", episodes, [64, 64], 13)   # stage 1's clips of one camera
    frames = resize_frames(video, [96, 96])  # (k, H, W, 3) uint8 -> (k, 3, 96, 96) uint8
    view = resize_frames(video, [96, 96], crop=[0.1, 0.2, 0.6, 0.6])  # a box of each frame, resized
    batch = expert_inputs(images, previous, state, instruction, frames, hidden, frame_latent)

A window starting at frame t of an episode reads frames (or actions) t, t+1, ..., clamped at the episode's
last frame; `is_pad` marks the clamped ones so that no loss counts them (the LeRobot convention of
`action_is_pad`). The stage-2 batch (`ExpertBatch`) is what `models.experts.Experts` reads: built per window by
`training.experts.ExpertWindows` from the decoded dataset and the world-model cache, and per control cycle by
`policy.HarmoWAMPolicy.plan` from the cameras and the world model's prediction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from harmowam_core.errors import HarmoWAMError
from harmowam_core.timing import Progress

if TYPE_CHECKING:  # the reader imports `window` from here
    from harmowam_core.data.reader import DatasetReader


def window(t: int, length: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The frame indices of a window of `size` frames starting at frame `t` of an episode of `length` frames,
    clamped at the last frame, and which of them are padding (past the episode's end): two (size,) arrays,
    int64 and bool."""
    wanted = np.arange(t, t + size)
    return np.minimum(wanted, length - 1), wanted > length - 1


def previous_frame(t: int) -> int:
    """The frame one control step before frame `t` of an episode: frame 0 itself at the start (nothing moved
    yet). Stage 1's context frame and the gate's motion input both follow it."""
    return max(0, t - 1)


def resize_frames(frames: np.ndarray, size: list[int], crop: list[float] | None = None) -> torch.Tensor:
    """(k, H, W, 3) uint8 -> (k, 3, h, w) uint8 at `size` = [h, w] (area averaging when both axes shrink, else
    antialiased bilinear; torch.nn.functional.interpolate). `crop` = [top, left, height, width], fractions of the
    frame, cuts that box (rounded to whole pixels, at least one) out before resizing (None: the whole frame)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    if crop is not None:
        rows, columns = crop_pixels(crop[0], crop[2], x.shape[-2]), crop_pixels(crop[1], crop[3], x.shape[-1])
        x = x[..., slice(*rows), slice(*columns)]
    if list(x.shape[-2:]) == list(size):
        return x.contiguous()
    shrink = x.shape[-2] >= size[0] and x.shape[-1] >= size[1]  # else one axis grows: a crop, a tall frame
    y = F.interpolate(x.float(), size=tuple(size), mode="area" if shrink else "bilinear", antialias=not shrink)
    return y.round().clamp(0, 255).to(torch.uint8)


def crop_pixels(start: float, extent: float, pixels: int) -> tuple[int, int]:
    """The pixel range [first, stop) of a crop starting at fraction `start` of an axis of `pixels` pixels and
    covering fraction `extent` of it: rounded to whole pixels, at least one, inside the axis."""
    first = min(max(0, int(round(start * pixels))), pixels - 1)
    return first, min(pixels, first + max(1, int(round(extent * pixels))))


class ExpertBatch(TypedDict, total=False):
    """The stage-2 batch (leading batch dimension B omitted per item): what `Experts.forward` (all fields) and
    `Experts.act` (all but the last three) read. Images are uint8 at the experts' resolution S."""

    images: torch.Tensor  # (cams, 3, S, S) uint8: the current frame of every camera, in the experts' order
    previous_images: torch.Tensor  # (cams, 3, S, S) uint8: one control step earlier (absent: none yet)
    state: torch.Tensor  # (state_dim,) float32: observation.state
    state_change: torch.Tensor  # (state_dim,) float32: its change since one control step earlier
    # (`action_space.state_change`; zeros at an episode's start). Read by a predictive expert with obs_steps 2
    instruction: str
    frames: torch.Tensor  # (chunk, 3, h, w) uint8: the imagined (or real) future frames 1..chunk
    wm_hidden: torch.Tensor  # (N, D): the world model's hidden tokens of the whole prediction
    wm_frame_tokens: torch.Tensor  # (chunk, n, D): those tokens regrouped per future frame
    action: torch.Tensor  # (chunk, A) float32: training targets
    action_is_pad: torch.Tensor  # (chunk,) bool
    interaction: torch.Tensor  # () int64: the current frame's label (1 interaction, 0 transit, -1 unlabelled)


def future_frame_tokens(hidden: torch.Tensor, frame_latent: torch.Tensor, chunk: int) -> torch.Tensor:
    """The world model's hidden tokens (..., F * n, D) regrouped per future frame 1..chunk: (..., chunk, n, D),
    frame k taking the tokens of its latent frame `frame_latent[k]` (`models.world_model.frame_to_latent`)."""
    latents = int(frame_latent[-1]) + 1
    per_latent = hidden.unflatten(-2, (latents, hidden.shape[-2] // latents))
    return per_latent[..., frame_latent[1 : chunk + 1].to(hidden.device), :, :]


def expert_inputs(
    images: torch.Tensor,
    previous_images: torch.Tensor | None,
    state: torch.Tensor,
    instruction: str,
    frames: torch.Tensor,
    wm_hidden: torch.Tensor,
    frame_latent: torch.Tensor,
    state_change: torch.Tensor | None = None,
) -> ExpertBatch:
    """One window's (or one control cycle's) stage-2 inputs from the camera images, the state (and its change
    since the previous control step; None: zeros, nothing moved yet), the imagined future frames 1..chunk and the
    world model's hidden tokens (shapes in `ExpertBatch`; chunk = len(frames))."""
    batch: ExpertBatch = {
        "images": images,
        "state": state,
        "state_change": torch.zeros_like(state) if state_change is None else state_change,
        "instruction": instruction,
        "frames": frames,
        "wm_hidden": wm_hidden,
        "wm_frame_tokens": future_frame_tokens(wm_hidden, frame_latent, len(frames)),
    }
    if previous_images is not None:
        batch["previous_images"] = previous_images
    return batch


CACHE_BUDGET_BYTES = 4 << 30  # decoded clips at the model's resolution are kept in memory below this


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
        idx, is_pad = window(t, int(self.reader.lengths[ep]), self.num_frames)
        if ep in self._frames:
            video = self._frames[ep][torch.from_numpy(idx)]
        else:
            video = resize_frames(self.reader.frames(ep, self.camera, idx), self.resolution)
        return video, torch.from_numpy(is_pad)

    def previous(self, ep: int, t: int) -> torch.Tensor:
        """(3, h, w) uint8: the frame one step before frame t (frame 0 for t = 0: nothing moved yet)."""
        t = previous_frame(t)
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
