"""RealSense cameras against a fake `pyrealsense2`: the newest frame comes back, a stale or missing frame is a
clear error (never a silent repeat), and a camera that does not start says which."""

from __future__ import annotations

import queue
import time

import numpy as np
import pytest
from fakes import fake_realsense

from harmowam_core.envs.real.cameras import CameraError, camera_backends, open_camera
from harmowam_core.envs.real.cameras.realsense import RealSenseCamera, connected_serials
from harmowam_core.envs.real.config import CameraConfig
from harmowam_core.errors import HarmoWAMError

CONFIG = CameraConfig(serial="123", role="front", width=8, height=6, fps=30)


def image(value: int) -> np.ndarray:
    return np.full((6, 8, 3), value, dtype=np.uint8)


def test_the_newest_frame_comes_back():
    frames = queue.Queue()
    with RealSenseCamera(CONFIG, rs=fake_realsense(frames), poll_ms=20) as cam:
        assert cam.pipeline.config.serial == "123"
        assert cam.pipeline.config.stream == ("color", 8, 6, "rgb8", 30)
        for v in (1, 2, 3):
            frames.put(image(v))
        deadline = time.monotonic() + 5
        while cam.latest(max_age=5.0)[0, 0, 0] != 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cam.latest(max_age=5.0)[0, 0, 0] == 3


def test_a_stale_frame_is_an_error_not_a_repeat():
    frames = queue.Queue()
    with RealSenseCamera(CONFIG, rs=fake_realsense(frames), poll_ms=20) as cam:
        frames.put(image(7))
        assert cam.latest(max_age=5.0, timeout=5.0)[0, 0, 0] == 7
        time.sleep(0.15)  # no new frame since
        with pytest.raises(CameraError, match="front .*stale"):
            cam.latest(max_age=0.05, timeout=0.1)


def test_no_frame_at_all_and_a_camera_that_does_not_start():
    with RealSenseCamera(CONFIG, rs=fake_realsense(queue.Queue()), poll_ms=20) as cam:
        with pytest.raises(CameraError, match="serial 123.*no frame within 0.1 s"):
            cam.latest(timeout=0.1)
    with pytest.raises(CameraError, match="serial 123.*did not start: No device connected"):
        RealSenseCamera(CONFIG, rs=fake_realsense(queue.Queue(), fail_start=True)).start()
    assert connected_serials(fake_realsense(queue.Queue())) == ["123", "456"]


def test_a_camera_backend_is_a_module_of_the_cameras_package_and_an_unknown_one_is_one_line():
    import dataclasses

    assert camera_backends() == ["realsense"]
    frames = queue.Queue()
    frames.put(np.zeros((CONFIG.height, CONFIG.width, 3), np.uint8))
    camera = open_camera(CONFIG, rs=fake_realsense(frames), poll_ms=20)
    try:
        assert isinstance(camera, RealSenseCamera) and camera.latest(max_age=5.0).shape == (
            CONFIG.height,
            CONFIG.width,
            3,
        )
    finally:
        camera.stop()
    unknown = dataclasses.replace(CONFIG)
    unknown.backend = "webcam"  # past the station file's own check (the next test)
    with pytest.raises(HarmoWAMError, match="unknown camera backend 'webcam' \\(available: realsense\\)"):
        open_camera(unknown)


def test_a_station_file_naming_an_unknown_camera_backend_is_one_located_line():
    from fakes import STATION

    from harmowam_core.envs.real.config import StationConfigError, station_config_from_data

    data = {**STATION, "cameras": [{**STATION["cameras"][0], "backend": "webcam"}]}
    with pytest.raises(StationConfigError, match=r"cameras.*backend.*expected a camera backend: realsense"):
        station_config_from_data(data)
