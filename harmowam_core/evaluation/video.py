"""The episode video: per executed step, the real world-model camera beside the world model's imagined frame for
that step, over a banner with the step, the expert in charge (colour-coded, as `policy.routers` colours them)
and p(interaction); encoded with PyAV (`data.video.VideoEncoder`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from harmowam_core.data.video import VideoEncoder
from harmowam_core.envs.base import Observation
from harmowam_core.policy.routers import ROUTER_TABLE

PANEL = 192  # each video panel is PANEL x PANEL pixels


BANNER = 40


COLOURS = {  # the banner's colour per executed expert (`routers` names them)
    **{used: ROUTER_TABLE[used].colour for used in ("predictive", "reactive", "average")},
    "scripted": (90, 90, 90),
}


def label_font():
    try:
        return ImageFont.load_default(size=14)
    except TypeError:  # an old Pillow without scalable default font
        return ImageFont.load_default()


class EpisodeVideo:
    """The per-episode mp4: real camera | imagined frame, over a status banner."""

    def __init__(self, path: Path, fps: int, camera: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.encoder = VideoEncoder(path, fps, PANEL + BANNER, 2 * PANEL)
        self.camera, self.font = camera, label_font()

    def add(self, obs: Observation, imagined: np.ndarray | None, step: int, used: str, p: float | None, stages):
        canvas = Image.new("RGB", (2 * PANEL, PANEL + BANNER), (20, 20, 20))
        if self.camera in obs.images:
            canvas.paste(Image.fromarray(obs.images[self.camera]).resize((PANEL, PANEL), Image.BILINEAR), (0, 0))
        if imagined is not None:
            canvas.paste(Image.fromarray(imagined).resize((PANEL, PANEL), Image.BILINEAR), (PANEL, 0))
        draw = ImageDraw.Draw(canvas)
        draw.rectangle([0, PANEL, 2 * PANEL, PANEL + BANNER], fill=COLOURS.get(used, (60, 60, 60)))
        gate = "" if p is None else f"  p(interaction) {p:.2f}"
        reached = "".join("+" if s else "-" for s in stages)
        draw.text((6, PANEL + 4), f"step {step}  {used}{gate}", fill=(255, 255, 255), font=self.font)
        draw.text((6, PANEL + 21), f"real | imagined   stages {reached}", fill=(235, 235, 235), font=self.font)
        self.encoder.add(np.asarray(canvas))

    def close(self) -> None:
        self.encoder.close()
