"""Absolute position targets and the delta actions they come from (issue 19, cause 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harmowam_core.action_space import absolute_targets, deltas_from_targets, position_mask, state_change
from harmowam_core.geometry import euler_to_mat, mat_to_euler, rotvec_to_mat
from harmowam_core.models.experts import Normalizer


def test_hand_made_poses_give_the_exact_targets_and_back():
    """At x 0.5 m a delta of +2 cm in x and -1 cm in z aims the setpoint at (0.52, 0, 0.19); the rotation delta
    and the gripper command pass through."""
    state = np.array([0.5, 0.0, 0.2, 0.0, 0.0, np.pi / 2, 0.0], dtype=np.float32)
    action = np.array([0.02, 0.0, -0.01, 0.1, 0.0, -0.05, 1.0], dtype=np.float32)
    target = absolute_targets(state, action)
    np.testing.assert_allclose(target, [0.52, 0.0, 0.19, 0.1, 0.0, -0.05, 1.0], atol=1e-7)
    np.testing.assert_allclose(deltas_from_targets(target, state), action, atol=1e-7)


def test_dual_arm_chunks_round_trip_against_one_state():
    rng = np.random.default_rng(0)
    states = rng.normal(0.0, 0.4, (12, 14)).astype(np.float32)
    actions = rng.normal(0.0, 0.03, (12, 14)).astype(np.float32)
    targets = absolute_targets(states, actions)
    np.testing.assert_allclose(deltas_from_targets(targets, states), actions, atol=1e-6)
    # a chunk of targets against the one state observed now: each position delta points from that state
    now = states[0]
    chunk = deltas_from_targets(targets, now)
    np.testing.assert_allclose(chunk[:, :3], targets[:, :3] - now[:3], atol=1e-6)
    np.testing.assert_allclose(chunk[:, 7:10], targets[:, 7:10] - now[7:10], atol=1e-6)
    np.testing.assert_array_equal(chunk[:, 3:7], actions[:, 3:7])
    assert position_mask(14).tolist() == [True] * 3 + [False] * 4 + [True] * 3 + [False] * 4


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="7 numbers per arm"):
        absolute_targets(np.zeros(6), np.zeros(6))
    with pytest.raises(ValueError, match="differ"):
        absolute_targets(np.zeros(7), np.zeros(14))


def test_absolute_bounds_follow_the_arm_not_the_demonstrated_box():
    """The sampler's clamp for absolute targets: a position target k + 1 steps ahead lies within k + 1 of the
    largest demonstrated steps of where the arm is now, even outside the box the demonstrations covered."""
    rng = np.random.default_rng(0)
    states = rng.uniform(-0.1, 0.03, (200, 7)).astype(np.float32)
    deltas = rng.uniform(-0.01, 0.02, (200, 7)).astype(np.float32)
    norm = Normalizer.from_arrays(absolute_targets(states, deltas), states, deltas)
    here = torch.tensor([[0.15, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0]])  # x 0.15: beyond every demonstrated target
    low, high = (norm.denormalize_action(b) for b in norm.chunk_bounds(here, 12, absolute=True))
    assert low.shape == (1, 12, 7)
    dmin, dmax = deltas.min(0), deltas.max(0)
    torch.testing.assert_close(low[0, 0, 0], torch.tensor(0.15 + float(dmin[0])), atol=1e-5, rtol=0)
    torch.testing.assert_close(high[0, 11, 0], torch.tensor(0.15 + 12 * float(dmax[0])), atol=1e-5, rtol=0)
    torch.testing.assert_close(high[0, 3, 6], torch.tensor(float(deltas[:, 6].max())), atol=1e-5, rtol=0)
    assert norm.chunk_bounds(here, 12, absolute=False)[0].shape == (7,)  # deltas: the demonstrated range


@pytest.mark.parametrize("euler", [(3.1, -0.1, -3.1), (np.pi, 0.0, 0.0), (0.3, -np.pi / 2 + 1e-4, 1.2)])
def test_a_state_change_is_the_world_frame_rotation_between_states_even_at_gimbal_lock(euler):
    """The rotation part of `state_change` is the rotation vector that takes the previous orientation to this one,
    applied on the left (the actions' convention): small where the euler angles wrap at +-pi or jump at pitch
    -pi/2 (the flowers task's pose, where roll and yaw move by radians for a tiny turn)."""
    turn = np.array([0.01, -0.02, 0.015])
    before = np.r_[0.5, 0.0, 0.2, euler, 0.0]
    after = np.r_[0.51, -0.02, 0.19, mat_to_euler(rotvec_to_mat(turn) @ euler_to_mat(np.array(euler))), 0.8]
    change = state_change(after, before)
    assert change.dtype == np.float32
    np.testing.assert_allclose(change, np.r_[0.01, -0.02, -0.01, turn, 0.8], atol=1e-5)
    dual = state_change(np.r_[after, after], np.r_[before, after])  # each arm its own
    np.testing.assert_allclose(dual, np.r_[change, np.zeros(7)], atol=1e-5)
    rows = state_change(np.stack([after, before]), np.stack([before, before]))  # leading dimensions
    np.testing.assert_allclose(rows, np.stack([change, np.zeros(7)]), atol=1e-5)
    other = state_change(np.array([4.0, 7.0]), np.array([-3.0, 0.5]))  # not 7 per arm: as it is
    np.testing.assert_allclose(other, [7.0, 6.5])


def test_pose_targets_make_the_orientation_absolute_and_correct_a_drift():
    """`pose` targets (rotation=True): at yaw 0.5 a yaw delta of 0.1 aims at yaw 0.6, whose rotation vector from
    the zero orientation is (0, 0, 0.6). Executed from a state whose roll has drifted to 0.1 rad, the same target
    becomes a delta that turns the roll back (where a predicted delta would leave the drift in place)."""
    state = np.array([0.5, 0.0, 0.2, 0.0, 0.0, 0.5, 0.0], dtype=np.float32)
    action = np.array([0.02, 0.0, -0.01, 0.0, 0.0, 0.1, 1.0], dtype=np.float32)
    target = absolute_targets(state, action, rotation=True)
    np.testing.assert_allclose(target, [0.52, 0.0, 0.19, 0.0, 0.0, 0.6, 1.0], atol=1e-6)
    np.testing.assert_allclose(deltas_from_targets(target, state, rotation=True), action, atol=1e-6)
    drifted = state.copy()
    drifted[3] = 0.1  # rolled by 0.1 rad
    delta = deltas_from_targets(target, drifted, rotation=True)
    turned = rotvec_to_mat(target[3:6])  # the delta, applied on the left, reaches the target orientation
    np.testing.assert_allclose(euler_to_mat(delta[3:6]) @ euler_to_mat(drifted[3:6]), turned, atol=1e-6)
    assert np.linalg.norm(delta[3:5]) > 0.095  # a tilt back by 0.1 rad about a horizontal axis (the world's x
    # turned by the yaw), plus the yaw's 0.1


@pytest.mark.parametrize("euler", [(0.3, -np.pi / 2 + 1e-3, 1.2), (0.0, 0.0, 1.5), (0.05, -0.1, -1.5)])
def test_pose_targets_round_trip_for_both_arms_also_near_gimbal_lock(euler):
    """A rotation vector has no gimbal lock: the flowers task's pitch -pi/2 and stack_cans' yaw +-1.5 round-trip."""
    rng = np.random.default_rng(1)
    states = np.tile(np.r_[0.5, 0.0, 0.2, euler, 0.0], (12, 2)).astype(np.float32)
    actions = rng.normal(0.0, 0.02, (12, 14)).astype(np.float32)
    targets = absolute_targets(states, actions, rotation=True)
    angles = np.linalg.norm(targets[:, 3:6], axis=1)  # the turn from the zero orientation, rad
    assert angles.max() < 0.9 * np.pi  # away from the half turn where a rotation vector flips
    np.testing.assert_allclose(deltas_from_targets(targets, states, rotation=True), actions, atol=2e-5)
