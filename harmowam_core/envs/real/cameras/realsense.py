"""The `realsense` camera backend: RealSense cameras through pyrealsense2, one pipeline per serial and a thread
holding the latest frame.

    with RealSenseCamera(CameraConfig(serial="123456789012", role="front")) as cam:
        image = cam.latest(max_age=0.1)       # (H, W, 3) uint8 rgb8; a stale or missing frame raises

Each camera streams rgb8 at its configured size and fps. A reader thread keeps only the newest frame and the
monotonic time it arrived; `latest` refuses a frame older than `max_age` seconds (never silently repeating an
old one) and waits at most `timeout` seconds for the first.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from harmowam_core.envs.real.cameras import CameraError
from harmowam_core.envs.real.config import CameraConfig
from harmowam_core.errors import HarmoWAMError


def import_realsense():
    try:
        import pyrealsense2 as rs
    except ImportError as err:
        raise HarmoWAMError(
            f"RealSense cameras need pyrealsense2 ({err}); install the extra (pip install -e '.[real]') and the "
            "Debian package libusb-1.0-0"
        ) from None
    return rs


def connected_serials(rs=None) -> list[str]:
    rs = rs or import_realsense()
    return [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]


class RealSenseCamera:
    def __init__(self, config: CameraConfig, rs=None, poll_ms: int = 1000):
        self.config, self.rs, self.poll_ms = config, rs or import_realsense(), poll_ms
        self._frame: np.ndarray | None = None
        self._arrived = 0.0
        self._error: Exception | None = None
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self.pipeline = None

    def start(self) -> RealSenseCamera:
        rs, c = self.rs, self.config
        self.pipeline = rs.pipeline()
        config = rs.config()
        config.enable_device(c.serial)
        config.enable_stream(rs.stream.color, c.width, c.height, rs.format.rgb8, c.fps)
        try:
            self.pipeline.start(config)
        except RuntimeError as err:
            raise CameraError(f"camera {c.role} (serial {c.serial}) did not start: {err}") from None
        self._thread = threading.Thread(target=self._read, name=f"realsense-{c.serial}", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        while not self._halt.is_set():
            try:
                frames = self.pipeline.wait_for_frames(self.poll_ms)
            except RuntimeError as err:  # no frame within poll_ms: `latest` reports staleness
                if self._halt.is_set():
                    return
                self._error = err
                continue
            color = frames.get_color_frame()
            if not color:
                continue
            image = np.asanyarray(color.get_data()).copy()
            with self._lock:
                self._frame, self._arrived, self._error = image, time.monotonic(), None

    def latest(self, max_age: float = 0.1, timeout: float = 2.0) -> np.ndarray:
        """The newest frame, at most `max_age` seconds old; waits up to `timeout` for a first frame."""
        c = self.config
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                frame, arrived = self._frame, self._arrived
            if frame is not None and time.monotonic() - arrived <= max_age:
                break
            if time.monotonic() > deadline:
                if frame is None:
                    raise CameraError(f"camera {c.role} (serial {c.serial}): no frame within {timeout:.1f} s")
                age = time.monotonic() - arrived
                raise CameraError(f"camera {c.role} (serial {c.serial}): newest frame is {age:.2f} s old (stale)")
            time.sleep(0.002)
        if frame.shape != (c.height, c.width, 3):
            raise CameraError(f"camera {c.role}: expected {c.height}x{c.width} rgb frames, got {frame.shape}")
        return frame

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.poll_ms / 1000)
        if self.pipeline is not None:
            try:
                self.pipeline.stop()
            except RuntimeError:
                pass

    def __enter__(self) -> RealSenseCamera:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


CAMERA = RealSenseCamera  # this module's backend: `realsense`
