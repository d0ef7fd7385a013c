"""The checks every station applies to an action before anything moves, simulated or real, so that a bad
action means the same on both: the simulator is where a policy's NaN is first met.

    action = check_finite(action, 7 * num_arms)        # (7 * arms,) float64, or UnsafeCommand
    rotvec = bounded_rotation(action[3:6], 0.1)        # axis-angle (3,), at most 0.1 rad

- A command with NaN or inf anywhere, or of the wrong size, is rejected with `UnsafeCommand` (a
  `HarmoWAMError`: one line, and the caller stops the arms) before any part of it reaches a controller.
- A rotation step is saturated per Euler component before it is converted: converting first would wrap an
  angle of 1e6 rad to an arbitrary rotation (1e6 mod 2 pi), which no clamp afterwards can undo.
"""

from __future__ import annotations

import numpy as np

from harmowam_core.errors import HarmoWAMError
from harmowam_core.geometry import euler_to_mat, mat_to_rotvec


class UnsafeCommand(HarmoWAMError):
    """A command that must not reach an arm (NaN, inf, wrong shape)."""


def check_finite(action: np.ndarray, size: int) -> np.ndarray:
    """The action as a flat float64 array of `size` numbers; `UnsafeCommand` when it has another size or a
    NaN or inf anywhere."""
    action = np.asarray(action, dtype=np.float64).reshape(-1)
    if action.shape != (size,):
        raise UnsafeCommand(f"expected an action of {size} numbers, got shape {action.shape}")
    if not np.all(np.isfinite(action)):
        raise UnsafeCommand(f"non-finite action rejected: {action.tolist()}")
    return action


def bounded_rotation(delta_euler: np.ndarray, max_angle: float) -> np.ndarray:
    """The axis-angle vector (3,), radians, of a rotation step given as extrinsic xyz Euler angles (3,),
    radians: each angle saturated to [-max_angle, max_angle] first, then the rotation scaled down to at most
    `max_angle` (axis kept). A roll of 1e6 rad becomes a roll of `max_angle`."""
    euler = np.clip(np.asarray(delta_euler, dtype=np.float64), -max_angle, max_angle)
    rotvec = mat_to_rotvec(euler_to_mat(euler))
    angle = float(np.linalg.norm(rotvec))
    return rotvec * (max_angle / angle) if angle > max_angle else rotvec
