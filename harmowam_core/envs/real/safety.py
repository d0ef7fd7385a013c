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
- Then the step-to-step (acceleration) limit: the step's translation may differ from the last step's by at
  most `max_translation_change` metres and its rotation vector by `max_rotation_change` radians, so a policy
  alternating between +-max every step ramps instead of reversing at once (the motion that trips
  libfranka's "joint acceleration discontinuity" reflex). The step's translation is also one the arm can
  still brake from (losing `max_translation_change` a step) without leaving the box, so near a wall the
  box and the step-to-step limit never contradict each other. A stopped arm starts again from rest.
- `Reflex` is an arm's control exception (franky's `ControlException`: a reflex such as a collision or a
  discontinuity); the station stops every arm and recovers only once the operator confirms.
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
from harmowam_core.errors import HarmoWAMError
from harmowam_core.geometry import rotvec_to_mat

__all__ = ["ArmGuard", "GripperHysteresis", "Reflex", "UnsafeCommand", "Watchdog", "check_finite"]


class Reflex(HarmoWAMError):
    """An arm stopped on a reflex or control error during a motion (franky's `ControlException`); `arm` is its
    name (unique in a station)."""

    def __init__(self, arm: str, message: str):
        super().__init__(message)
        self.arm, self.message = arm, message

    def __reduce__(self):  # picklable across worker processes, like every other HarmoWAMError
        return (type(self), (self.arm, self.message))


def _toward(start: np.ndarray, goal: np.ndarray, limit: float) -> np.ndarray:
    """`goal`, or the point at distance `limit` from `start` on the way to it."""
    change = goal - start
    norm = float(np.linalg.norm(change))
    return start + change * (limit / norm) if norm > limit else goal


def braking_distance(speed: float, deceleration: float) -> float:
    """Metres covered after a step of `speed` metres while every following step is `deceleration` shorter:
    sum over k >= 1 of max(speed - k * deceleration, 0)."""
    n = np.floor(speed / deceleration)
    return float(n * speed - deceleration * n * (n + 1) / 2)


class ArmGuard:
    """Per-step limits, the workspace box and the step-to-step limit of one arm. Remembers the last step sent
    (translation (3,) m, rotation vector (3,) rad); `reset()` after a stop or homing (the arm is at rest)."""

    def __init__(self, config: ArmConfig):
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.last_step, self.last_rotvec = np.zeros(3), np.zeros(3)

    def limit_step(self, delta_position: np.ndarray, delta_euler: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The step's translation (m) and rotation (as a rotation matrix), scaled into the per-step limits."""
        delta_position = np.asarray(delta_position, dtype=np.float64)
        norm = float(np.linalg.norm(delta_position))
        if norm > self.config.max_translation:
            delta_position = delta_position * (self.config.max_translation / norm)
        return delta_position, rotvec_to_mat(bounded_rotation(delta_euler, self.config.max_rotation))

    def target(self, position: np.ndarray, rotation: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The absolute target (position (3,) m, rotation matrix (3, 3)) for a 6-number delta [dx, dy, dz,
        droll, dpitch, dyaw] in the base frame from the current pose; rejects non-finite input, limits
        everything else: per step, into the box, then step to step. Remembers the step it returns."""
        delta = check_finite(delta, 6)
        position = np.asarray(position, dtype=np.float64)
        c = self.config
        step = self.limit_step(delta[:3], delta[3:])[0]
        step = c.workspace.clamp(position + step) - position  # toward the box when outside: maybe long
        step = _toward(np.zeros(3), _toward(self.last_step, step, c.max_translation_change), c.max_translation)
        step = self._brakeable(position, step)
        if c.workspace.contains(position):
            step = c.workspace.clamp(position + step) - position  # the box is hard (moves it by < 1e-9 m at most)
        rotvec = _toward(self.last_rotvec, bounded_rotation(delta[3:], c.max_rotation), c.max_rotation_change)
        self.last_step, self.last_rotvec = step, rotvec
        return position + step, rotvec_to_mat(rotvec) @ np.asarray(rotation, dtype=np.float64)

    def _stops_in_box(self, position: np.ndarray, step: np.ndarray, slack: float = 1e-9) -> bool:
        """Whether `position + step` is in the box and so is where braking from that step ends (within
        `slack` metres: rounding, not motion)."""
        speed = float(np.linalg.norm(step))
        braking = braking_distance(speed, self.config.max_translation_change) / max(speed, 1e-12)
        lo, hi = np.asarray(self.config.workspace.min) - slack, np.asarray(self.config.workspace.max) + slack
        ends = np.stack([position + step, position + step * (1.0 + braking)])
        return bool(np.all(ends >= lo) and np.all(ends <= hi))

    def _brakeable(self, position: np.ndarray, step: np.ndarray) -> np.ndarray:
        """The step nearest to `step`, on the segment from braking (the last step, `max_translation_change`
        shorter), that the arm can still brake from inside the box. Both ends satisfy the per-step and
        step-to-step limits, so every point between does. When even braking cannot stay in the box (the arm
        is outside it: moved there by hand, or lagging far behind its targets) `step` is returned as it is,
        already limited and aimed into the box: the arm goes back within the per-step and step-to-step
        limits, never in one jump."""
        if self._stops_in_box(position, step):
            return step
        brake = _toward(self.last_step, np.zeros(3), self.config.max_translation_change)
        if not self._stops_in_box(position, brake):
            return step
        lo, hi = 0.0, 1.0  # the fraction of the way from brake to step: lo is safe
        for _ in range(30):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self._stops_in_box(position, brake + mid * (step - brake)) else (lo, mid)
        return brake + lo * (step - brake)


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
