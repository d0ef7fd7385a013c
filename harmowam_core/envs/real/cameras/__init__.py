"""Cameras of the real station behind one protocol; a backend is one module of this package.

    camera = open_camera(CameraConfig(serial="123456789012", role="front"))   # started; backend "realsense"
    image = camera.latest(max_age=0.1)       # (H, W, 3) uint8 RGB; a stale or missing frame raises CameraError
    camera.stop()

A station file names each camera's `backend` (default `realsense`): the module `cameras/<backend>.py`, whose
`CAMERA` class implements `Camera` and is built as `CAMERA(config, **options)`. Adding a camera kind is adding
that one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Protocol, runtime_checkable

import numpy as np

from harmowam_core.envs.real.config import CameraConfig
from harmowam_core.errors import HarmoWAMError


class CameraError(HarmoWAMError):
    """A camera that does not start, or whose newest frame is missing, stale or of the wrong size."""


@runtime_checkable
class Camera(Protocol):
    config: CameraConfig

    def start(self) -> Camera:
        """Start streaming; raises CameraError when the device does not start."""
        ...

    def latest(self, max_age: float = 0.1, timeout: float = 2.0) -> np.ndarray:
        """The newest frame, (height, width, 3) uint8 RGB, at most `max_age` seconds old; waits up to `timeout`
        seconds for a first frame; raises CameraError otherwise (never repeats an old frame silently)."""
        ...

    def stop(self) -> None: ...


def camera_backends() -> list[str]:
    """The backends this package holds (its modules), sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def open_camera(config: CameraConfig, **options) -> Camera:
    """The started camera of `config` (its `backend`'s `CAMERA` class); `options` go to that class (the
    realsense backend takes `rs`, a pyrealsense2 stand-in for tests). Raises HarmoWAMError for an unknown
    backend and CameraError when the camera does not start."""
    if config.backend not in camera_backends():
        raise HarmoWAMError(f"unknown camera backend '{config.backend}' (available: {', '.join(camera_backends())})")
    module = importlib.import_module(f"{__name__}.{config.backend}")
    return module.CAMERA(config, **options).start()


__all__ = ["Camera", "CameraError", "camera_backends", "open_camera"]
