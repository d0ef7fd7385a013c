"""Teleoperating the simulated station with robosuite's input devices (keyboard, SpaceMouse).

A robosuite `Device` reports the operator's input (position delta, rotation delta, grasp toggle, reset); the
pilot here turns it into this package's action (per arm: delta xyz in metres, delta Euler xyz, gripper 0/1)
at the same per-step limits as every other action, and shows the station's cameras in a window. Runs at the
recipe's control rate in real time. Both devices need a desktop session: robosuite reads the keyboard (and
the SpaceMouse's arm-switch keys) through pynput, and the window is OpenCV's.

Keyboard: arrows move in the table plane, `.`/`;` down/up, `e r y h p o` rotate, space toggles the gripper,
`=` switches arm (dual-arm tasks), `q` ends the episode.
"""

from __future__ import annotations

import time

import numpy as np

from harmowam_core.envs.base import Observation
from harmowam_core.envs.sim.scene import MAX_DELTA_POS, MAX_DELTA_ROT
from harmowam_core.errors import ParameterError, first_line
from harmowam_core.geometry import mat_to_euler, rotvec_to_mat

TELEOP_KINDS = ("scripted", "keyboard", "spacemouse")
WINDOW = "harmowam teleop"
VIEW_HEIGHT = 320  # pixels: camera images are scaled to this height side by side


def device_class(kind: str):
    """robosuite's device class for `kind`; a clear error where it cannot run here (checked before anything
    starts)."""
    if kind not in TELEOP_KINDS[1:]:
        raise ParameterError("teleop", f"must be one of {', '.join(TELEOP_KINDS)}, got '{kind}'")
    try:
        if kind == "keyboard":
            from robosuite.devices import Keyboard

            return Keyboard
        from robosuite.devices.spacemouse import SpaceMouse

        return SpaceMouse
    except ImportError as e:
        reason = first_line(e)
        need = "pip install hidapi, and " if kind == "spacemouse" and "hid" in reason else ""
        raise ParameterError("teleop", f"{kind} cannot start ({need}a desktop session is needed): {reason}") from None


def open_device(kind: str, station):
    """The robosuite device for `kind`, bound to the station's robosuite environment (reset it first)."""
    cls = device_class(kind)
    try:
        return cls(env=station.raw_env, pos_sensitivity=1.0, rot_sensitivity=1.0)
    except OSError as e:
        raise ParameterError("teleop", f"{kind}: the device could not be opened ({e})") from None


class DeviceTeleop:
    """One episode driven by an input device. `act(obs)` returns the next action; `stopped` turns true when
    the operator ends the episode."""

    def __init__(self, device, num_arms: int, fps: float, show: bool = True):
        self.device, self.num_arms, self.period, self.show = device, num_arms, 1.0 / fps, show
        self.grip = [0.0] * num_arms
        self.stopped = False
        self._next = None
        device.start_control()

    def active_arm(self) -> int:
        """Our arm index of the device's active robot (robosuite orders dual arms right, left; we left, right)."""
        return self.num_arms - 1 - int(getattr(self.device, "active_robot", 0)) if self.num_arms == 2 else 0

    def act(self, obs: Observation | None = None) -> np.ndarray:
        if self.show and obs is not None:
            show_cameras(obs)
        self._pace()
        state = self.device.get_controller_state()
        action = np.zeros(7 * self.num_arms, dtype=np.float32)
        if state["reset"]:
            self.stopped = True
        else:
            # robosuite's own mapping of raw device rotation to the end effector (gripper pointing down)
            drot = np.asarray(state["raw_drotation"], dtype=np.float64)[[1, 0, 2]]
            drot[2] = -drot[2]
            dpos, drot = self.device._postprocess_device_outputs(np.asarray(state["dpos"], dtype=np.float64), drot)
            arm = self.active_arm()
            action[7 * arm : 7 * arm + 3] = np.clip(dpos, -1.0, 1.0) * MAX_DELTA_POS
            action[7 * arm + 3 : 7 * arm + 6] = mat_to_euler(rotvec_to_mat(np.clip(drot, -1.0, 1.0) * MAX_DELTA_ROT))
            self.grip[arm] = 1.0 if state["grasp"] else 0.0
        action[6::7] = self.grip
        return action

    def _pace(self):
        """Hold the control rate in real time, so the operator sees the robot move at its true speed."""
        now = time.perf_counter()
        if self._next is not None and now < self._next:
            time.sleep(self._next - now)
        self._next = max(now, self._next or now) + self.period


def show_cameras(obs: Observation) -> None:
    import cv2

    tiles = []
    for img in obs.images.values():
        scale = VIEW_HEIGHT / img.shape[0]
        tile = cv2.resize(img, (round(img.shape[1] * scale), VIEW_HEIGHT), interpolation=cv2.INTER_NEAREST)
        tiles.append(tile[:, :, ::-1])  # RGB -> BGR
    if tiles:
        cv2.imshow(WINDOW, np.concatenate(tiles, axis=1))
        cv2.waitKey(1)
