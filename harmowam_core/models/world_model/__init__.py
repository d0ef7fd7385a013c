"""The world model (stage 1, paper sections 3.3 and 3.5) behind one declared interface.

    from harmowam_core.models.world_model import WorldModel       # the Wan-architecture implementation (`wan`)
    wm = WorldModel.from_pretrained("runs/stack_cans/wm/model")
    out = wm.predict(current_frames, ["stack the cans"])          # WorldModelOutput

What the rest of the project uses of a world model is `WorldModelInterface`: stage 2's trainer and cache, the
policy and the bundle read nothing else. Another world model is a module of this package implementing it, plus
a preset (`models.presets`); `codecs` holds the frame <-> latent codecs and the frame-to-latent bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from harmowam_core.errors import HarmoWAMError
from harmowam_core.models.presets import WorldModelConfig


@dataclass
class WorldModelOutput:
    frames: torch.Tensor  # (B, T, 3, H, W) in [0, 1]; frame 0 is the current frame
    latents: torch.Tensor  # (B, T, C, h, w): the clean latent that holds each frame
    hidden: torch.Tensor  # (B, N, D): the feature block's hidden tokens at the last denoising step


@runtime_checkable
class WorldModelInterface(Protocol):
    """What the experts' training, the world-model cache, the policy and the bundle use of a world model."""

    config: WorldModelConfig  # num_frames (13: the current frame + the chunk's 12), resolution [H, W],
    # denoising_steps; hidden_size below is the width D of `WorldModelOutput.hidden`

    @property
    def codec(self) -> torch.nn.Module:  # `temporal`: video frames per latent frame after the first
        ...

    @property
    def hidden_size(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def predict(
        self,
        current: torch.Tensor,
        instructions: list[str],
        steps: int | None = None,
        generator: torch.Generator | None = None,
        previous: torch.Tensor | None = None,
    ) -> WorldModelOutput:
        """Imagine `config.num_frames` frames from the current ones (B, 3, H, W) uint8 or [0, 1] float, the
        frames one control step earlier as `previous` (None: a still scene)."""
        ...

    def save_pretrained(self, path: str | Path) -> None: ...

    # a torch.nn.Module's mode and placement
    training: bool

    def train(self, mode: bool = True) -> WorldModelInterface: ...

    def eval(self) -> WorldModelInterface: ...

    def to(self, device: str | torch.device) -> WorldModelInterface: ...


from harmowam_core.models.world_model.codecs import (  # noqa: E402  (after the interface they implement)
    PixelCodec,
    WanVAECodec,
    build_codec,
    frame_to_latent,
    latent_frames,
)
from harmowam_core.models.world_model.wan import (  # noqa: E402
    CONFIG_NAME,
    WorldModel,
    build_transformer,
    parameter_count,
    resolve_checkpoint,
)


def world_model_dir(path: str | Path) -> Path:
    """The saved world model `path` names: the model directory itself (a run's `wm/model`, a bundle's
    `world_model/`), train-wm's run directory (`runs/<task>/wm`: its `model/`) or the task's run directory
    (`runs/<task>`: `wm/model/`) or a bundle (its `world_model/`), as `harmowam export` takes a run directory.
    Raises HarmoWAMError (one line) where none of them holds one."""
    path = Path(path)
    for candidate in (path, path / "model", path / "wm" / "model", path / "world_model"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    if not path.is_dir():
        what = "not a directory" if path.exists() else "no such directory"
        raise HarmoWAMError(f"{path}: {what}; train a world model with `harmowam train-wm` first")
    raise HarmoWAMError(
        f"{path}: no trained world model (no {CONFIG_NAME} here, in model/, wm/model/ or world_model/); "
        "train one with `harmowam train-wm` first"
    )


def load_world_model(path: str | Path) -> WorldModelInterface:
    """The world model saved at `path` by `save_pretrained` (a run's `wm/model`, a bundle's `world_model/`), or in
    a run directory holding one (`world_model_dir`): the one place that picks the implementation. Raises
    HarmoWAMError for a missing or incomplete directory."""
    return WorldModel.from_pretrained(world_model_dir(path))


def new_world_model(config: WorldModelConfig) -> WorldModel:
    """A world model to train (stage 1): from its pretrained checkpoint (`config.pretrained`, a local directory
    or a hub id already in the local cache) or freshly initialised."""
    if config.pretrained:
        return WorldModel.from_pretrained(resolve_checkpoint(config.pretrained), config)
    return WorldModel.from_config(config)


__all__ = [
    "CONFIG_NAME",
    "PixelCodec",
    "WanVAECodec",
    "WorldModel",
    "WorldModelInterface",
    "WorldModelOutput",
    "build_codec",
    "build_transformer",
    "frame_to_latent",
    "latent_frames",
    "load_world_model",
    "world_model_dir",
    "new_world_model",
    "parameter_count",
    "resolve_checkpoint",
]
