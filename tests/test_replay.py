"""Sanity ladder (a), issue 19: replaying a recorded episode's actions from its recorded scene seed through a
fresh simulated station reproduces the episode: every recorded state, frame by frame, and the stage results.

This is what makes closed-loop numbers meaningful: the simulator is deterministic, a dataset's `seed` and `ood`
identify its scene, and the actions it stores are the ones the station executed (they round-trip through the
station's action conversion, gripper hysteresis included). The episodes are collected by the real `collect`
(one worker, so the second episode was recorded on a station that had already run one) and replayed without
rendering, which gives the same physics as the rendering station that recorded them.
"""

from __future__ import annotations

import numpy as np
import pytest

from harmowam_core.collect import collect
from harmowam_core.config import load_recipe
from harmowam_core.data.reader import DatasetReader
from harmowam_core.envs.sim.station import SimStation

pytestmark = pytest.mark.sim


def one_small_camera(role: str) -> str:
    """A recipe override keeping one 16 x 16 camera: rendering is most of a recorded step's time."""
    return f"cameras=[{{name: {role}, role: {role}, height: 16, width: 16}}]"


@pytest.mark.parametrize(
    "task, camera, ood, steps",
    [
        ("stack_cans", "front", "none", 215),  # single arm: stage 1 (beside) at ~123-190 steps, stage 2 at ~250
        ("flowers", "global", "position", 90),  # dual arm, position OOD scenes: stage 1 (pick) at ~62 steps
    ],
)
def test_replaying_recorded_actions_from_the_recorded_seed_reproduces_states_and_stages(
    task, camera, ood, steps, tmp_path
):
    recipe = load_recipe(task, [f"max_episode_steps={steps}", one_small_camera(camera)])
    stats = collect(recipe, tmp_path / "data", 2, ood=ood, keep_failures=True, workers=1)
    assert stats.saved == 2
    reader = DatasetReader(tmp_path / "data")
    with SimStation(recipe, render=False) as station:
        for ep in (1, 0):  # the second episode first: a fresh station, then one that has run an episode
            row = reader.episodes[ep]
            assert row["seed"] == stats.seeds[ep] and row["ood"] == ood
            frames = reader.episode_slice(ep)
            actions, states = reader.action[frames], reader.state[frames]
            obs = station.reset(seed=row["seed"], ood=row["ood"])
            replayed = []
            for action in actions:
                replayed.append(obs.state)
                obs = station.step(action)
            np.testing.assert_allclose(np.stack(replayed), states, rtol=0, atol=1e-6)
            assert station.stage_success() == [bool(s) for s in row["stage_success"]]
            assert any(row["stage_success"]) and not all(row["stage_success"])  # a stage reached, one not
