"""One Franka arm through franky-control: safe delta actions in, state out.

    arm = FrankyArm(station.arms[0])           # connects to the FCI host; a refusal is one clear error
    arm.command(action)                         # (7,): [dx, dy, dz, droll, dpitch, dyaw, gripper]
    arm.state()                                 # (7,): [x, y, z, roll, pitch, yaw (from home), gripper]
    arm.stop()

A delta becomes an absolute Cartesian target in the base frame (translation added, rotation composed on the
left, both limited by `safety.ArmGuard`: per step, workspace box, step to step), sent with
`Robot.move(..., asynchronous=True)` so each control step replaces the last target. A reflex during that
motion surfaces as franky's `ControlException` at the next `move`; it becomes `safety.Reflex`, and
`recover(confirm)` clears it (`Robot.recover_from_errors`) only once the operator confirms, lowering the
arm's `relative_dynamics_factor` to the configured `recovery_dynamics_factor`. The gripper goes through
`GripperHysteresis`: it grasps or opens only when the command crosses the far threshold, and holds each state
`gripper.min_hold_steps` steps at least. `DryRunArm` has the same interface, connects to nothing and prints
what it would send.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from harmowam_core.envs.real.config import ArmConfig
from harmowam_core.envs.real.safety import ArmGuard, GripperHysteresis, Reflex, check_finite
from harmowam_core.errors import HarmoWAMError, first_line
from harmowam_core.geometry import euler_to_mat, mat_to_euler, mat_to_quat, quat_to_mat

STOP_WAIT_S = 0.05  # how long `stop` waits for a command being sent from another thread


def import_franky():
    try:
        import franky
    except ImportError as err:
        raise HarmoWAMError(
            f"the real station needs franky-control ({err}); install the extra: pip install -e '.[real]'"
        ) from None
    return franky


def _xyzw(m: np.ndarray) -> list[float]:
    w, x, y, z = mat_to_quat(m)  # franky's Affine takes quaternions as [x, y, z, w]
    return [float(x), float(y), float(z), float(w)]


class _ArmBase:
    def __init__(self, config: ArmConfig):
        self.config = config
        self.guard = ArmGuard(config)
        g = config.gripper
        self.hysteresis = GripperHysteresis(g.close_above, g.open_below, min_hold=g.min_hold_steps)
        self.home_rotation = euler_to_mat(np.asarray(config.home_euler))
        self.faulted = False  # a reflex stopped it; nothing is sent until `recover`
        self._sending = threading.RLock()  # held while a command is computed and sent
        self._stops = 0  # how many times `stop` ran

    def pose(self) -> tuple[np.ndarray, np.ndarray]:  # position (3,), rotation matrix (3, 3)
        raise NotImplementedError

    def gripper_closedness(self) -> float:
        raise NotImplementedError

    def state(self) -> np.ndarray:
        position, rotation = self.pose()
        euler = mat_to_euler(rotation @ self.home_rotation.T)
        return np.r_[position, euler, self.gripper_closedness()].astype(np.float32)

    def command(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """Send one step; returns the (clamped) target position, rotation and gripper state sent."""
        action = check_finite(action, 7)
        position, rotation = self.pose()
        with self._sending:  # `stop` (the watchdog's thread) waits for a send under way, then preempts it
            stops = self._stops
            before = (self.guard.last_step, self.guard.last_rotvec, self.hysteresis.closed, self.hysteresis.held)
            target, target_rotation = self.guard.target(position, rotation, action[:6])
            closed = self.hysteresis.update(float(action[6]))
            try:
                if stops == self._stops:
                    self._send(target, target_rotation, closed if closed != before[2] else None)
                    return target, target_rotation, closed
            except BaseException:  # nothing was sent: the guard and the fingers are as they were
                self.guard.last_step, self.guard.last_rotvec, self.hysteresis.closed, self.hysteresis.held = before
                raise
            # stopped (the watchdog's thread) while this step was computed: not sent; the next starts from rest
            self.hysteresis.closed, self.hysteresis.held = before[2], before[3]
            return position, rotation, before[2]

    def stop(self) -> None:
        """Stop the arm where it is (never raises: it runs from the watchdog, Ctrl-C and error paths); the next
        command starts from rest. A command being sent from another thread finishes first (waited for at most
        STOP_WAIT_S), so no step computed before the stop is sent after it."""
        locked = self._sending.acquire(timeout=STOP_WAIT_S)
        try:
            self._stops += 1
            self.guard.reset()
        finally:
            if locked:
                self._sending.release()
        self._stop_motion()

    def _stop_motion(self) -> None:
        raise NotImplementedError

    def _send(self, position: np.ndarray, rotation: np.ndarray, gripper: bool | None) -> None:
        raise NotImplementedError

    def recover(self, confirm: Callable[[str], bool]) -> bool:
        """Clear a reflex/error state only once the operator confirms it is safe; the arm then goes on at the
        configured `recovery_dynamics_factor` and from rest. False (and nothing done) when they decline."""
        factor = self.config.recovery_dynamics_factor
        name, host = self.config.name, self.config.host
        if not confirm(f"recover the {name} arm at {host} and go on at relative dynamics factor {factor:g}?"):
            return False
        self._recover(factor)
        self.faulted = False
        self.guard.reset()
        return True

    def _recover(self, dynamics_factor: float) -> None:
        raise NotImplementedError


class FrankyArm(_ArmBase):
    def __init__(self, config: ArmConfig, franky=None):
        super().__init__(config)
        self.franky = franky or import_franky()
        try:
            self.robot = self.franky.Robot(config.host)
            self.gripper = self.franky.Gripper(config.host)
        except Exception as err:  # noqa: BLE001 - libfranka raises its own network/command exceptions
            reason = first_line(err)
            raise HarmoWAMError(f"cannot connect to the {config.name} arm at {config.host}: {reason}") from None
        self.robot.relative_dynamics_factor = config.relative_dynamics_factor
        torque, force = config.collision_torque, config.collision_force
        self.robot.set_collision_behavior(torque, torque, force, force)

    def pose(self) -> tuple[np.ndarray, np.ndarray]:
        affine = self.robot.current_cartesian_state.pose.end_effector_pose
        x, y, z, w = np.asarray(affine.quaternion, dtype=np.float64)
        return np.asarray(affine.translation, dtype=np.float64), quat_to_mat(np.array([w, x, y, z]))

    def gripper_closedness(self) -> float:
        return float(np.clip(1.0 - self.gripper.width / self.config.gripper.open_width, 0.0, 1.0))

    def _send(self, position: np.ndarray, rotation: np.ndarray, gripper: bool | None) -> None:
        if self.faulted:
            raise Reflex(self.config.name, f"the {self.config.name} arm is stopped after a reflex; recover it first")
        motion = self.franky.CartesianMotion(self.franky.Affine(position.tolist(), _xyzw(rotation)))
        try:
            self.robot.move(motion, asynchronous=True)  # raises the reflex of the motion this one replaces
        except self.franky.ControlException as err:
            self.faulted = True
            reason = first_line(err)
            raise Reflex(self.config.name, f"the {self.config.name} arm at {self.config.host}: {reason}") from None
        g = self.config.gripper
        if gripper is True:
            self.gripper.grasp_async(0.0, g.speed, g.force, epsilon_outer=1.0)
        elif gripper is False:
            self.gripper.move_async(g.open_width, g.speed)

    def _stop_motion(self) -> None:
        try:
            self.robot.stop()  # preempts the running motion
        except Exception:  # noqa: BLE001 - a robot already in reflex is stopped anyway
            pass

    def home(self) -> None:
        """Move to the configured home pose and wait (the arm's relative dynamics factor applies)."""
        rotation = euler_to_mat(np.asarray(self.config.home_euler))
        target = self.franky.Affine(list(self.config.home_position), _xyzw(rotation))
        self.robot.move(self.franky.CartesianMotion(target))
        g = self.config.gripper
        self.gripper.move(g.open_width, g.speed)
        self.hysteresis.reset()
        self.guard.reset()

    def _recover(self, dynamics_factor: float) -> None:
        if self.robot.recover_from_errors() is False:
            raise HarmoWAMError(f"the {self.config.name} arm at {self.config.host} did not recover: check it in Desk")
        self.robot.relative_dynamics_factor = dynamics_factor


class DryRunArm(_ArmBase):
    """Prints every command instead of sending it; its pose follows the targets it would have sent."""

    def __init__(self, config: ArmConfig, echo: Callable[[str], None] = print):
        super().__init__(config)
        self.echo = echo
        self.position = np.asarray(config.home_position, dtype=np.float64)
        self.rotation = self.home_rotation.copy()
        self.sent: list[tuple[np.ndarray, np.ndarray, bool | None]] = []

    def pose(self) -> tuple[np.ndarray, np.ndarray]:
        return self.position.copy(), self.rotation.copy()

    def gripper_closedness(self) -> float:
        return 1.0 if self.hysteresis.closed else 0.0

    def _send(self, position: np.ndarray, rotation: np.ndarray, gripper: bool | None) -> None:
        self.sent.append((position, rotation, gripper))
        self.position, self.rotation = position, rotation
        grip = {True: " · grasp", False: " · open", None: ""}[gripper]
        euler = mat_to_euler(rotation @ self.home_rotation.T)
        self.echo(
            f"[dry run] {self.config.name} -> position {np.round(position, 4).tolist()} "
            f"euler-from-home {np.round(euler, 4).tolist()}{grip}"
        )

    def _stop_motion(self) -> None:
        self.echo(f"[dry run] {self.config.name} stop")

    def home(self) -> None:
        self.position = np.asarray(self.config.home_position, dtype=np.float64)
        self.rotation = self.home_rotation.copy()
        self.hysteresis.reset()
        self.guard.reset()
        self.echo(f"[dry run] {self.config.name} home {self.config.home_position}")

    def _recover(self, dynamics_factor: float) -> None:
        self.echo(f"[dry run] {self.config.name} recover, relative dynamics factor {dynamics_factor:g}")
