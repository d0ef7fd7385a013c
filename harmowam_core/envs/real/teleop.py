"""Teleoperating the real station: a 3Dconnexion SpaceMouse (through hidapi's `hid` module) or the terminal
keyboard, turned into this package's actions at the station's per-step limits.

    devices = open_spacemice(num_arms)            # one SpaceMouse per arm
    pilot = RealTeleop(devices, station_config)
    action = pilot.act(obs)                       # pilot.stopped turns true when the operator ends the episode

SpaceMouse: push/tilt to move and rotate the end effector (full deflection = the arm's `max_translation` /
`max_rotation` per step); the left button toggles the gripper, the right button ends the episode. Axes
(device -> arm base frame): push away = +x, push left = +y, lift = +z; tilts rotate about the same axes.
Keyboard (in the terminal): w/s x, a/d y, r/f z, q/e yaw, space gripper, tab switches arm, Enter ends.
The station paces every step at its control rate, so the pilot does not.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np

from harmowam_core.envs.base import Observation
from harmowam_core.envs.real.config import StationConfig
from harmowam_core.envs.real.operator import stdin_taken
from harmowam_core.errors import HarmoWAMError, ParameterError
from harmowam_core.geometry import mat_to_euler, rotvec_to_mat

SPACEMOUSE_VENDOR = 0x256F  # 3Dconnexion
FULL_SCALE = 350.0  # raw axis value at full deflection
REAL_TELEOP_KINDS = ("spacemouse", "keyboard")


def _int16s(data, start: int) -> list[float]:
    return [float(int.from_bytes(bytes(data[i : i + 2]), "little", signed=True)) for i in range(start, start + 6, 2)]


class SpaceMouse:
    """The latest 6-axis deflection (-1..1) and button bits of one SpaceMouse; `poll()` drains its reports."""

    def __init__(self, device):
        self.device = device
        self.motion = np.zeros(6)
        self.buttons = 0
        device.set_nonblocking(True)

    def parse(self, data) -> None:
        if not data:
            return
        if data[0] == 1:  # translation; newer models append the rotation to the same report
            self.motion[:3] = _int16s(data, 1)
            if len(data) >= 13:
                self.motion[3:] = _int16s(data, 7)
        elif data[0] == 2:
            self.motion[3:] = _int16s(data, 1)
        elif data[0] == 3:
            self.buttons = int(data[1])

    def poll(self) -> tuple[np.ndarray, int]:
        while data := self.device.read(64):
            self.parse(data)
        return np.clip(self.motion / FULL_SCALE, -1.0, 1.0), self.buttons

    def to_base(self, deflection: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Device axes (x right, y toward the user, z down) to the arm base frame (translation, rotation)."""
        x, y, z, rx, ry, rz = deflection
        return np.array([-y, -x, -z]), np.array([-ry, -rx, -rz])


def open_spacemice(count: int, hid=None) -> list[SpaceMouse]:
    """`count` SpaceMice in USB path order (left arm first)."""
    if hid is None:
        try:
            import hid
        except ImportError as err:
            raise ParameterError("teleop", f"spacemouse needs hidapi ({err}); pip install -e '.[real]'") from None
    found = sorted((d for d in hid.enumerate() if d["vendor_id"] == SPACEMOUSE_VENDOR), key=lambda d: d["path"])
    if len(found) < count:
        raise HarmoWAMError(
            f"--teleop spacemouse: {count} SpaceMouse(s) needed (one per arm), {len(found)} found "
            "(USB vendor 256f; check the udev permissions of /dev/hidraw*)"
        )
    mice = []
    for info in found[:count]:
        device = hid.device()
        try:
            device.open_path(info["path"])
        except OSError as err:
            raise ParameterError("teleop", f"spacemouse: cannot open {info['path']!r} ({err})") from None
        mice.append(SpaceMouse(device))
    return mice


class TerminalKeys:
    """Keys from a terminal (cbreak mode while open); `poll()` returns the keys pressed since the last poll."""

    def __init__(self, stream=None):
        if stream is None and stdin_taken():
            raise HarmoWAMError("stdin is already read by this process's real-station operator terminal (a deploy)")
        self.stream = stream or sys.stdin
        self._keys: list[str] = []
        self._lock = threading.Lock()
        self._saved = None
        if self.stream.isatty():
            import termios
            import tty

            self._saved = termios.tcgetattr(self.stream.fileno())
            tty.setcbreak(self.stream.fileno())
        threading.Thread(target=self._read, name="harmowam-keys", daemon=True).start()

    def _read(self) -> None:
        while ch := self.stream.read(1):
            with self._lock:
                self._keys.append(ch)

    def poll(self) -> list[str]:
        with self._lock:
            keys, self._keys = self._keys, []
        return keys

    def unread(self, keys: list[str]) -> None:
        """Put keys back, in front, for the next poll."""
        with self._lock:
            self._keys[:0] = keys

    def ask(self, question: str) -> bool:
        """A yes/no question answered with one key (the terminal is in cbreak mode: `input()` would race the
        key reader). Keys typed after the answer stay for whoever reads next."""
        print(f"{question} [y/n] ", end="", flush=True)
        while True:
            keys = self.poll()
            for i, key in enumerate(keys):
                if key.lower() in ("y", "n"):
                    self.unread(keys[i + 1 :])
                    print(key)
                    return key.lower() == "y"
            time.sleep(0.02)

    def close(self) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._saved)
            self._saved = None


KEYS = {"w": (0, 1), "s": (0, -1), "a": (1, 1), "d": (1, -1), "r": (2, 1), "f": (2, -1), "q": (5, 1), "e": (5, -1)}


class RealTeleop:
    """An operator's episode: `act(obs)` gives the next action, `stopped` turns true when they end it."""

    def __init__(self, devices, station: StationConfig):
        self.devices, self.station = devices, station
        self.num_arms = len(station.arms)
        self.grip = [0.0] * self.num_arms
        self.stopped = False
        self.arm = 0  # the keyboard's active arm
        self._buttons = [0] * len(devices) if not isinstance(devices, TerminalKeys) else []

    def close(self) -> None:
        if isinstance(self.devices, TerminalKeys):
            self.devices.close()  # the terminal back to line mode

    def act(self, obs: Observation | None = None) -> np.ndarray:
        action = np.zeros(7 * self.num_arms, dtype=np.float32)
        if isinstance(self.devices, TerminalKeys):
            self._keyboard(action)
        else:
            for arm, mouse in enumerate(self.devices):
                deflection, buttons = mouse.poll()
                pressed = buttons & ~self._buttons[arm]
                self._buttons[arm] = buttons
                if pressed & 1:
                    self.grip[arm] = 1.0 - self.grip[arm]
                if pressed & 2:
                    self.stopped = True
                move, turn = mouse.to_base(deflection)
                self._set(action, arm, move, turn)
        action[6::7] = self.grip
        return action

    def _set(self, action: np.ndarray, arm: int, move: np.ndarray, turn: np.ndarray) -> None:
        limits = self.station.arms[arm]
        action[7 * arm : 7 * arm + 3] = np.clip(move, -1, 1) * limits.max_translation
        rot = rotvec_to_mat(np.clip(turn, -1, 1) * limits.max_rotation)
        action[7 * arm + 3 : 7 * arm + 6] = mat_to_euler(rot)

    def _keyboard(self, action: np.ndarray) -> None:
        moves = np.zeros((self.num_arms, 6))
        keys = self.devices.poll()
        for i, key in enumerate(keys):
            if key in KEYS:
                axis, sign = KEYS[key]
                moves[self.arm, axis] += sign
            elif key == " ":
                self.grip[self.arm] = 1.0 - self.grip[self.arm]
            elif key == "\t":
                self.arm = (self.arm + 1) % self.num_arms
            elif key in ("\n", "\r"):
                self.stopped = True
                self.devices.unread(keys[i + 1 :])  # what follows answers the operator's questions
                break
        for arm in range(self.num_arms):
            self._set(action, arm, moves[arm, :3], moves[arm, 3:])


def open_teleop(kind: str, station: StationConfig):
    if kind == "spacemouse":
        return RealTeleop(open_spacemice(len(station.arms)), station)
    if kind == "keyboard":
        return RealTeleop(TerminalKeys(), station)
    raise ParameterError("teleop", f"on the real station: one of {', '.join(REAL_TELEOP_KINDS)}, got '{kind}'")
