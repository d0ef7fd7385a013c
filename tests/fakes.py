"""Test doubles shared by the test modules: a fake franky, a fake pyrealsense2, a fake HID device (SpaceMouse), and a
station file for them. Each records what the code under test sent, so tests check commands, not hardware."""

from __future__ import annotations

import queue
import time
import types

import numpy as np
import yaml

STATION = {
    "control_hz": 20,
    "watchdog_s": 0.25,
    "arms": [
        {
            "name": "right",
            "host": "127.0.0.1",
            "home": {"position": [0.45, 0.0, 0.35], "euler": [np.pi, 0.0, 0.0]},
            "workspace": {"min": [0.25, -0.35, 0.02], "max": [0.75, 0.35, 0.55]},
            "max_translation": 0.02,
            "max_rotation": 0.1,
        }
    ],
    "cameras": [{"serial": "123", "role": "front", "width": 640, "height": 480, "fps": 30}],
}


class FakeFranky(types.SimpleNamespace):
    """The slice of franky's API the arm uses, recording every call. A move is recorded as ("move", motion,
    asynchronous, host, pose before it); with `follow` the arm reaches each target at once (one shared pose:
    single-arm stations). `reflex_at`: the asynchronous moves (counted from 0) that raise franky's
    `ControlException` instead, as a reflex of the motion they replace surfaces; until `recover_from_errors`
    every move raises it again."""

    def __init__(self, refuse=(), follow=False, reflex_at=()):
        calls: list = []
        pose = {"translation": np.array([0.45, 0.0, 0.35]), "quaternion": np.array([1.0, 0.0, 0.0, 0.0])}
        state = {"attempts": 0, "reflex": False}

        class ControlException(Exception):
            pass

        class Affine:
            def __init__(self, translation=(0, 0, 0), quaternion=(0, 0, 0, 1)):
                self.translation, self.quaternion = np.asarray(translation), np.asarray(quaternion)

        class CartesianMotion:
            def __init__(self, target, reference=None):
                self.target = target

        class CartesianStopMotion:
            pass

        class Robot:
            def __init__(self, host):
                if host in refuse:
                    raise RuntimeError(f"libfranka: Connection to {host} refused\nmore detail")
                self.host = host
                calls.append(("connect", host))

            @property
            def current_cartesian_state(self):
                affine = Affine(pose["translation"], pose["quaternion"])
                return types.SimpleNamespace(pose=types.SimpleNamespace(end_effector_pose=affine))

            def set_collision_behavior(self, *thresholds):
                calls.append(("collision", thresholds))

            def move(self, motion, asynchronous=False):
                if asynchronous:
                    state["reflex"] = state["reflex"] or state["attempts"] in reflex_at
                    state["attempts"] += 1
                if state["reflex"]:
                    calls.append(("reflex", self.host))
                    raise ControlException(
                        "libfranka: Move command aborted: motion aborted by reflex! "
                        '["cartesian_motion_generator_joint_acceleration_discontinuity"]'
                    )
                before = {k: v.copy() for k, v in pose.items()}
                calls.append(("move", motion, asynchronous, self.host, before))
                if follow:
                    pose.update(translation=motion.target.translation, quaternion=motion.target.quaternion)

            def recover_from_errors(self):
                state["reflex"] = False
                calls.append(("recover",))
                return True

            def stop(self):
                calls.append(("stop", self.host))

        class Gripper:
            width = 0.08

            def __init__(self, host):
                if host in refuse:
                    raise RuntimeError(f"libfranka: Connection to {host} refused")

            def grasp_async(self, width, speed, force, epsilon_outer=None):
                calls.append(("grasp", width, speed, force))

            def move_async(self, width, speed):
                calls.append(("open", width, speed))

            def move(self, width, speed):
                calls.append(("open-wait", width, speed))

        super().__init__(
            Affine=Affine, CartesianMotion=CartesianMotion, CartesianStopMotion=CartesianStopMotion, Robot=Robot,
            Gripper=Gripper, ControlException=ControlException, calls=calls, pose=pose,
        )  # fmt: skip

    def moves(self):
        return [c[1] for c in self.calls if c[0] == "move"]


def fake_realsense(frames: queue.Queue, fail_start: bool = False, serials=("123", "456")):
    class Frame:
        def __init__(self, image):
            self.image = image

        def get_data(self):
            return self.image

        def __bool__(self):
            return True

    class Pipeline:
        def start(self, config):
            if fail_start:
                raise RuntimeError("No device connected")
            self.config = config

        def wait_for_frames(self, timeout_ms):
            try:
                image = frames.get(timeout=timeout_ms / 1000)
            except queue.Empty:
                raise RuntimeError("Frame didn't arrive within the timeout") from None
            return types.SimpleNamespace(get_color_frame=lambda: Frame(image))

        def stop(self):
            pass

    class Config:
        def enable_device(self, serial):
            self.serial = serial

        def enable_stream(self, *args):
            self.stream = args

    class Device:
        def __init__(self, serial):
            self.serial = serial

        def get_info(self, what):
            return self.serial

    return types.SimpleNamespace(
        pipeline=Pipeline, config=Config, stream=types.SimpleNamespace(color="color"),
        format=types.SimpleNamespace(rgb8="rgb8"), camera_info=types.SimpleNamespace(serial_number="sn"),
        context=lambda: types.SimpleNamespace(query_devices=lambda: [Device(s) for s in serials]),
    )  # fmt: skip


class Cameras:
    """A fake pyrealsense2 whose pipelines always have a fresh frame."""

    def __init__(self):
        self.frames = queue.Queue()
        self.rs = fake_realsense(self.frames)
        pipeline = self.rs.pipeline

        class Fresh(pipeline):
            def wait_for_frames(self, timeout_ms):
                time.sleep(0.002)
                self_frames.put(np.full((6, 8, 3), 9, np.uint8))
                return super().wait_for_frames(timeout_ms)

        self_frames = self.frames
        self.rs.pipeline = Fresh


def single_station(watchdog_s=0.25, control_hz=20):
    """The single-arm station file with the three cameras a single-arm recipe uses."""
    from harmowam_core.envs.real.config import station_config_from_data

    data = yaml.safe_load(yaml.safe_dump(STATION))
    data["cameras"] = [{"serial": s, "role": r, "width": 8, "height": 6} for s, r in
                       (("1", "front"), ("2", "top"), ("3", "wrist"))]  # fmt: skip
    data.update(watchdog_s=watchdog_s, control_hz=control_hz)
    return station_config_from_data(data)


def open_station(recipe_name, config, answers=(), franky=None, confirm=None, **kw):
    """A RealStation on a fake franky (`franky`, default a new one) and fake cameras; the operator answers
    `answers` in turn (or `confirm` does). Returns (station, franky)."""
    from harmowam_core.config import load_recipe
    from harmowam_core.envs.real.station import RealStation

    answers = list(answers)
    franky = franky or FakeFranky()
    station = RealStation(
        load_recipe(recipe_name), config, franky=franky, rs=Cameras().rs,
        confirm=confirm or (lambda q: answers.pop(0)), echo=kw.pop("echo", lambda line: None), watch_enter=False, **kw,
    )  # fmt: skip
    return station, franky


def report(rid: int, *values: int) -> list[int]:
    out = [rid]
    for v in values:
        out += list(int(v).to_bytes(2, "little", signed=True))
    return out


class FakeDevice:
    def __init__(self, reports=()):
        self.reports = list(reports)

    def set_nonblocking(self, flag):
        self.nonblocking = flag

    def open_path(self, path):
        self.path = path

    def read(self, size):
        return self.reports.pop(0) if self.reports else []
