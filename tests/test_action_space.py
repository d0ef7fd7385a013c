"""Absolute end-effector targets and the delta actions they come from (issue 19, cause 3)."""

from __future__ import annotations

import numpy as np
import pytest

from harmowam_core.action_space import absolute_targets, deltas_from_targets
from harmowam_core.envs.sim.geometry import euler_to_mat, mat_to_euler


def test_hand_made_poses_give_the_exact_targets_and_back():
    """At 0.5 m, yawed 90 degrees from home, a delta of +2 cm in x and a 0.1 rad roll (applied on the left,
    in the world frame) aims the setpoint at x 0.52 with the roll composed before the yaw."""
    state = np.array([0.5, 0.0, 0.2, 0.0, 0.0, np.pi / 2, 0.0], dtype=np.float32)
    action = np.array([0.02, 0.0, -0.01, 0.1, 0.0, 0.0, 1.0], dtype=np.float32)
    target = absolute_targets(state, action)
    np.testing.assert_allclose(target[:3], [0.52, 0.0, 0.19], atol=1e-7)
    expected = mat_to_euler(euler_to_mat(np.array([0.1, 0.0, 0.0])) @ euler_to_mat(np.array([0.0, 0.0, np.pi / 2])))
    np.testing.assert_allclose(target[3:6], expected, atol=1e-6)
    assert target[6] == 1.0
    np.testing.assert_allclose(deltas_from_targets(target, state), action, atol=1e-6)


def test_dual_arm_chunks_round_trip_against_one_state():
    rng = np.random.default_rng(0)
    states = rng.normal(0.0, 0.4, (12, 14)).astype(np.float32)
    actions = rng.normal(0.0, 0.03, (12, 14)).astype(np.float32)
    targets = absolute_targets(states, actions)
    np.testing.assert_allclose(deltas_from_targets(targets, states), actions, atol=1e-6)
    # a chunk of targets against the one state observed now: each delta points from that state
    now = states[0]
    chunk = deltas_from_targets(targets, now)
    np.testing.assert_allclose(chunk[:, :3], targets[:, :3] - now[:3], atol=1e-6)
    np.testing.assert_allclose(chunk[:, 7:10], targets[:, 7:10] - now[7:10], atol=1e-6)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="7 numbers per arm"):
        absolute_targets(np.zeros(6), np.zeros(6))
    with pytest.raises(ValueError, match="differ"):
        absolute_targets(np.zeros(7), np.zeros(14))
