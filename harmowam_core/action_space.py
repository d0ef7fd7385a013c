"""What the experts predict: the dataset's delta actions, or absolute end-effector targets (issue 19, cause 3).

A recorded action is a delta per arm, [dx, dy, dz, droll, dpitch, dyaw, gripper]: metres, and the euler angles
(extrinsic xyz) of a rotation applied on the left in the world frame (robosuite's OSC_POSE; the real station's
`ArmGuard` the same), with the gripper command in [0, 1]. `observation.state` is, per arm, [x, y, z, roll,
pitch, yaw, closure]: the position in the table frame and the euler angles of the orientation relative to home.
Because the rotation is applied on the left, it composes with the state's relative orientation directly:
R_target = R_delta @ R_state.

The absolute target of step t is where its delta sends the controller's setpoint: position_t + delta, the
rotation R_delta @ R_state, and the gripper command unchanged. Diffusion action heads fit such targets much
better than deltas (Chi et al. 2023, diffusion policy on robomimic). At run time each target becomes a delta
against the state observed at the step that executes it, so the conversion closes the loop.

    targets = absolute_targets(states, actions)          # (N, 7 * arms) each, numpy
    deltas = deltas_from_targets(targets, states)        # == actions (to float precision)
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.spatial.transform import Rotation

ActionTargets = Literal["delta", "absolute"]
ACTION_TARGETS = ("delta", "absolute")
PER_ARM = 7


def _per_arm(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.shape[-1] % PER_ARM:
        raise ValueError(f"expected {PER_ARM} numbers per arm, got a last axis of {x.shape[-1]}")
    return x.reshape(*x.shape[:-1], x.shape[-1] // PER_ARM, PER_ARM)


def _euler(m: np.ndarray) -> np.ndarray:
    return Rotation.from_matrix(m.reshape(-1, 3, 3)).as_euler("xyz").reshape(*m.shape[:-2], 3)


def _matrix(euler: np.ndarray) -> np.ndarray:
    return Rotation.from_euler("xyz", euler.reshape(-1, 3)).as_matrix().reshape(*euler.shape[:-1], 3, 3)


def absolute_targets(states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """(..., 7 * arms) states and the delta actions taken from them -> (..., 7 * arms) absolute targets
    (float32). Raises `ValueError` when the shapes differ or are not 7 numbers per arm."""
    s, a = _per_arm(states), _per_arm(actions)
    if s.shape != a.shape:
        raise ValueError(f"states {s.shape} and actions {a.shape} differ in shape")
    out = np.empty_like(a)
    out[..., :3] = s[..., :3] + a[..., :3]
    out[..., 3:6] = _euler(_matrix(a[..., 3:6]) @ _matrix(s[..., 3:6]))
    out[..., 6] = a[..., 6]
    return out.reshape(np.shape(actions)).astype(np.float32)


def deltas_from_targets(targets: np.ndarray, state: np.ndarray) -> np.ndarray:
    """(..., 7 * arms) absolute targets and the state observed now (broadcast against them) -> the delta
    actions that send the setpoint there (float32): the inverse of `absolute_targets`."""
    t = _per_arm(targets)
    s = np.broadcast_to(_per_arm(state), t.shape)
    out = np.empty_like(t)
    out[..., :3] = t[..., :3] - s[..., :3]
    out[..., 3:6] = _euler(_matrix(t[..., 3:6]) @ np.swapaxes(_matrix(s[..., 3:6]), -1, -2))
    out[..., 6] = t[..., 6]
    return out.reshape(np.shape(targets)).astype(np.float32)
