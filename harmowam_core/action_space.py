"""What the experts predict: the dataset's delta actions, or absolute position targets (issue 19, cause 3).

A recorded action is a delta per arm, [dx, dy, dz, droll, dpitch, dyaw, gripper]: metres, the euler angles
(extrinsic xyz) of a rotation applied on the left in the world frame (robosuite's OSC_POSE; the real station's
`ArmGuard` the same), and the gripper command in [0, 1]. `observation.state` is, per arm, [x, y, z, roll,
pitch, yaw, closure] with the position in the table frame.

The absolute target of step t keeps the rotation delta and the gripper command and replaces the position delta
by where it sends the controller's setpoint: position_t + delta. Diffusion action heads fit such targets much
better than deltas (Chi et al. 2023, diffusion policy on robomimic). The rotation stays a delta: absolute euler
angles jump at gimbal lock (the flowers task turns an arm to pitch -pi/2, where a 0.01 rad change of state moves
roll and yaw by radians), while the deltas are small and continuous. At run time each target becomes a delta
against the position observed at the step that executes it, so the conversion closes the loop.

    targets = absolute_targets(states, actions)          # (N, 7 * arms) each, numpy
    deltas = deltas_from_targets(targets, states)        # == actions (to float precision)
"""

from __future__ import annotations

import numpy as np

PER_ARM = 7


def _per_arm(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.shape[-1] % PER_ARM:
        raise ValueError(f"expected {PER_ARM} numbers per arm, got a last axis of {x.shape[-1]}")
    return x.reshape(*x.shape[:-1], x.shape[-1] // PER_ARM, PER_ARM)


def absolute_targets(states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """(..., 7 * arms) states and the delta actions taken from them -> (..., 7 * arms) targets (float32): the
    position made absolute, rotation and gripper unchanged. Raises `ValueError` when the shapes differ or are
    not 7 numbers per arm."""
    s, a = _per_arm(states), _per_arm(actions)
    if s.shape != a.shape:
        raise ValueError(f"states {s.shape} and actions {a.shape} differ in shape")
    out = a.copy()
    out[..., :3] = s[..., :3] + a[..., :3]
    return out.reshape(np.shape(actions)).astype(np.float32)


def deltas_from_targets(targets: np.ndarray, state: np.ndarray) -> np.ndarray:
    """(..., 7 * arms) targets and the state observed now (broadcast against them) -> the delta actions that
    send the setpoint there (float32): the inverse of `absolute_targets`."""
    t = _per_arm(targets)
    s = np.broadcast_to(_per_arm(state), t.shape)
    out = t.copy()
    out[..., :3] = t[..., :3] - s[..., :3]
    return out.reshape(np.shape(targets)).astype(np.float32)


def position_mask(action_dim: int) -> np.ndarray:
    """(action_dim,) bool: the numbers that are positions (the ones `absolute_targets` makes absolute)."""
    return np.tile(np.arange(PER_ARM) < 3, action_dim // PER_ARM)
