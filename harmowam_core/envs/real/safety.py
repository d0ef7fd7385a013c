"""The safety layer between a policy's actions and the arms: nothing reaches an arm without passing here.

    guard = ArmGuard(arm_config)
    target = guard.target(current_position, current_rotation, action[:6])   # clamped, or UnsafeCommand
    hysteresis = GripperHysteresis(close_above=0.6, open_below=0.4)
    closed = hysteresis.update(action[6])

- A command with NaN or inf anywhere is rejected (`UnsafeCommand`, shared with the simulator:
  `envs.commands`); the caller stops the arm.
- The translation of one step is scaled down to `max_translation` metres (direction kept) and the rotation,
  each Euler angle saturated first, to `max_rotation` radians (axis kept; `envs.commands.bounded_rotation`);
  the resulting position is clamped into the workspace box.
- `Watchdog` calls its stop function when `feed()` has not been called within the deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from harmowam_core.envs import gripper
from harmowam_core.envs.commands import UnsafeCommand, bounded_rotation, check_finite
from harmowam_core.envs.real.config import ArmConfig
from harmowam_core.geometry import rotvec_to_mat

__all__ = ["ArmGuard", "GripperHysteresis", "UnsafeCommand", "Watchdog", "check_finite"]


class ArmGuard:
    """Per-step limits and the workspace box of one arm."""

    def __init__(self, config: ArmConfig):
        self.config = config

    def limit_step(self, delta_position: np.ndarray, delta_euler: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The step's translation (m) and rotation (as a rotation matrix), scaled into the per-step limits."""
        delta_position = np.asarray(delta_position, dtype=np.float64)
        norm = float(np.linalg.norm(delta_position))
        if norm > self.config.max_translation:
            delta_position = delta_position * (self.config.max_translation / norm)
        return delta_position, rotvec_to_mat(bounded_rotation(delta_euler, self.config.max_rotation))

    def target(self, position: np.ndarray, rotation: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The absolute target (position, rotation matrix) for a 6-number delta [dx, dy, dz, droll, dpitch,
        dyaw] in the base frame from the current pose; rejects non-finite input, clamps everything else."""
        delta = check_finite(delta, 6)
        step, rot = self.limit_step(delta[:3], delta[3:])
        goal = self.config.workspace.clamp(np.asarray(position, dtype=np.float64) + step)
        return goal, rot @ np.asarray(rotation, dtype=np.float64)


class GripperHysteresis(gripper.GripperHysteresis):
    """`envs.gripper.GripperHysteresis` whose non-finite command is an `UnsafeCommand` (the caller stops the arm)."""

    def update(self, command: float) -> bool:
        try:
            return super().update(command)
        except ValueError as e:
            raise UnsafeCommand(str(e)) from None


class Watchdog:
    """Calls `stop` once when `feed()` has not come within `deadline` seconds (checked every deadline / 5).
    `feed()` arms it (each control step), `disarm()` pauses it (homing, scoring: moments without commands).
    Use as a context manager; `expired` tells whether it fired since the last feed."""

    def __init__(self, deadline: float, stop: Callable[[], None], clock: Callable[[], float] = time.monotonic):
        self.deadline, self.stop_fn, self.clock = deadline, stop, clock
        self.last = clock()
        self.armed = False
        self.expired = False
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="harmowam-watchdog", daemon=True)

    def feed(self) -> None:
        self.last = self.clock()
        self.armed, self.expired = True, False

    def disarm(self) -> None:
        self.armed = False

    def _run(self) -> None:
        while not self._halt.wait(self.deadline / 5):
            if self.armed and not self.expired and self.clock() - self.last > self.deadline:
                self.expired = True
                self.stop_fn()

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._halt.set()
        self._thread.join()
