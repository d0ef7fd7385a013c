"""What the experts predict: the dataset's delta actions, or absolute position targets (issue 19, cause 3).

A recorded action is a delta per arm, [dx, dy, dz, droll, dpitch, dyaw, gripper]: metres, the euler angles
(extrinsic xyz) of a rotation applied on the left in the world frame (robosuite's OSC_POSE; the real station's
`ArmGuard` the same), and the gripper command in [0, 1]. `observation.state` is, per arm, [x, y, z, roll,
pitch, yaw, closure] with the position in the table frame.

The absolute target of step t keeps the rotation delta and the gripper command and replaces the position delta
by where it sends the controller's setpoint: position_t + delta. Diffusion action heads fit such targets much
better than deltas (Chi et al. 2023, diffusion policy on robomimic). Absolute euler angles would jump at gimbal
lock (the flowers task turns an arm to pitch -pi/2, where a 0.01 rad change of state moves roll and yaw by
radians), so by default the rotation stays a small, continuous delta. With `rotation` (the `pose` targets) the
rotation is made absolute too, without euler angles: the orientation the delta sends the gripper to,
R = E(delta) @ E(state), as its rotation vector from the state's zero orientation (the simulator's gripper
down at yaw 0; the real station's `home_euler`). That has no gimbal lock and is continuous below a half turn
from the zero orientation; executed as a target, an orientation error is corrected at the next step instead of
adding up over the episode as a sum of predicted deltas. At run time each target becomes a delta against the
state observed at the step that executes it, so the conversion closes the loop.

    targets = absolute_targets(states, actions)          # (N, 7 * arms) each, numpy
    deltas = deltas_from_targets(targets, states)        # == actions (to float precision)
    poses = absolute_targets(states, actions, rotation=True)       # the rotation absolute too
    deltas = deltas_from_targets(poses, states, rotation=True)     # == actions
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harmowam_core.geometry import euler_to_mat, mat_to_euler, mat_to_rotvec, rotvec_to_mat

PER_ARM = 7


def _per_arm(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.shape[-1] % PER_ARM:
        raise ValueError(f"expected {PER_ARM} numbers per arm, got a last axis of {x.shape[-1]}")
    return x.reshape(*x.shape[:-1], x.shape[-1] // PER_ARM, PER_ARM)


def absolute_targets(states: np.ndarray, actions: np.ndarray, rotation: bool = False) -> np.ndarray:
    """(..., 7 * arms) states and the delta actions taken from them -> (..., 7 * arms) targets (float32): the
    position made absolute (m), the gripper unchanged, the rotation unchanged or, with `rotation`, the target
    orientation's rotation vector (rad). Raises `ValueError` when the shapes differ or are not 7 numbers per
    arm."""
    s, a = _per_arm(states), _per_arm(actions)
    if s.shape != a.shape:
        raise ValueError(f"states {s.shape} and actions {a.shape} differ in shape")
    out = a.copy()
    out[..., :3] = s[..., :3] + a[..., :3]
    if rotation:
        for i in np.ndindex(out.shape[:-1]):
            out[i][3:6] = mat_to_rotvec(euler_to_mat(a[i][3:6]) @ euler_to_mat(s[i][3:6]))
    return out.reshape(np.shape(actions)).astype(np.float32)


def deltas_from_targets(targets: np.ndarray, state: np.ndarray, rotation: bool = False) -> np.ndarray:
    """(..., 7 * arms) targets and the state observed now (broadcast against them) -> the delta actions that
    send the setpoint there (float32): the inverse of `absolute_targets` (with the same `rotation`)."""
    t = _per_arm(targets)
    s = np.broadcast_to(_per_arm(state), t.shape)
    out = t.copy()
    out[..., :3] = t[..., :3] - s[..., :3]
    if rotation:
        for i in np.ndindex(out.shape[:-1]):
            out[i][3:6] = mat_to_euler(rotvec_to_mat(t[i][3:6]) @ euler_to_mat(s[i][3:6]).T)
    return out.reshape(np.shape(targets)).astype(np.float32)


def position_mask(action_dim: int) -> np.ndarray:
    """(action_dim,) bool: the numbers that are positions (the ones `absolute_targets` makes absolute)."""
    return np.tile(np.arange(PER_ARM) < 3, action_dim // PER_ARM)


def state_change(state: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """The change of `observation.state` (..., S) since `previous` (same shape), float32, per arm: the position's
    difference (m), the rotation from the previous orientation to this one as a rotation vector in the world
    frame (rad; the convention of the actions' rotation deltas, so no jump where euler angles wrap or meet
    gimbal lock) and the gripper closure's difference. A state that is not 7 numbers per arm (a dataset
    recorded elsewhere, e.g. joint positions) is differenced as it is."""
    state, previous = np.asarray(state, dtype=np.float64), np.asarray(previous, dtype=np.float64)
    change = state - previous
    if change.shape[-1] % PER_ARM:
        return change.astype(np.float32)
    now, before, out = _per_arm(state), _per_arm(previous), _per_arm(change)
    for index in np.ndindex(out.shape[:-1]):
        turn = euler_to_mat(now[index][3:6]) @ euler_to_mat(before[index][3:6]).T
        out[index][3:6] = mat_to_rotvec(turn)
    return out.reshape(change.shape).astype(np.float32)


def check_station_action_space(bundle: str | Path) -> None:
    """Refuse a bundle whose experts act in an action space HarmoWAM's stations cannot execute (learnt from a
    dataset recorded elsewhere, such as an SO-101's 6 joint positions): they run 7 numbers per arm. Reads
    `bundle/experts/harmowam_experts.json` and the bundle's recipe; raises HarmoWAMError, one line."""
    import json

    import yaml

    from harmowam_core.errors import HarmoWAMError

    bundle = Path(bundle)
    config_path = bundle / "experts" / "harmowam_experts.json"
    if not config_path.is_file():
        return  # not a bundle this check understands; loading it reports what is wrong
    action_dim = int(json.loads(config_path.read_text())["config"]["action_dim"])
    recipe_path = bundle / "recipe.yaml"
    recipe = (yaml.safe_load(recipe_path.read_text()) or {}) if recipe_path.is_file() else {}
    arms = 2 if recipe.get("arms") == "dual" else 1
    if action_dim != PER_ARM * arms:
        raise HarmoWAMError(
            f"{bundle}: its experts act in a {action_dim}-number action space (learnt from the dataset's own "
            f"actions), but a {arms}-arm HarmoWAM station executes {PER_ARM * arms} (dx, dy, dz, droll, dpitch, "
            "dyaw, gripper per arm); deploy it on a robot with that action space, or train on 7-per-arm deltas"
        )
