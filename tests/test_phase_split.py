"""Table 1's transit / interaction split (appendix D.2, `phase_split`): every shipped task defines its first
target; an evaluation episode records whether the gripper reached its vicinity; an interaction episode hands
over from the scripted approach to the expert at the pre-grasp pose; the table counts both."""

from __future__ import annotations

import numpy as np
import pytest

from harmowam_core.config import load_recipe
from harmowam_core.envs.sim.tasks import sim_task_names
from harmowam_core.envs.sim.tasks.base import TransitTarget
from harmowam_core.evaluation.rollout import EpisodeResult
from harmowam_core.evaluation.runner import EvalSession
from harmowam_core.evaluation.trace import read_trace
from harmowam_core.phase_split import (
    VICINITY,
    HandoverActor,
    HandoverSession,
    in_vicinity,
    split_rows,
    supports_split,
)
from harmowam_core.policy.bundle import export_bundle, untrained_run

SCRIPTED_IN_VICINITY = 33  # stack_cans, seed 1000 in-domain: the scripted approach enters the vicinity here


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("split")
    untrained_run(root / "runs" / "stack_cans", load_recipe("stack_cans"), resolution=32)
    return export_bundle(root / "runs" / "stack_cans", root / "bundles", name="tiny")


def test_every_shipped_task_defines_its_first_transit_target():
    assert all(supports_split(load_recipe(name)) for name in sim_task_names())
    assert in_vicinity(object()) is None  # not a simulated station: not measured


class Station:
    """A stand-in simulated station: the first target's top is at z 0.10 m, centred over (0.5, 0.0); the
    gripper is at `eef`."""

    def __init__(self, *eef: float):
        self.task = self.view = self
        self.eef = np.array(eef)

    def transit_target(self, view):
        return TransitTarget(0, "can1", np.array([0.5, 0.0]), 0.10)

    def eef_pos(self, arm):
        return self.eef


@pytest.mark.parametrize(
    ("eef", "inside"),
    [
        ((0.5, 0.0, 0.115), True),  # over the target, 1.5 cm above its top: the pre-grasp region
        ((0.52, 0.01, 0.101), True),
        ((0.5, 0.0, 0.129), True),
        ((0.5, 0.0, 0.135), False),  # too high
        ((0.535, 0.0, 0.115), False),  # 3.5 cm off horizontally
        ((0.52, 0.0, 0.02), False),  # sweeping past at table height, below the top (appendix D.2: "vicinity")
        ((0.5, 0.0, 0.095), False),  # just below the top
    ],
)
def test_the_vicinity_is_within_3_cm_horizontally_and_between_the_top_and_3_cm_above_it(eef, inside):
    assert in_vicinity(Station(*eef)) is inside


@pytest.mark.sim
def test_evaluation_episodes_record_transit_and_interaction_episodes_hand_over(bundle, tmp_path):
    evaluation = EvalSession(bundle, ["predictive"], True, 1000, max_steps=50)
    try:
        scripted = evaluation.run(("none", 0, "scripted", None, tmp_path / "scripted.parquet"))
        policy = evaluation.run(("none", 0, "predictive", None, None))
    finally:
        evaluation.close()
    assert scripted.transit is True  # the scripted approach reaches the first can's vicinity within 50 steps
    assert policy.transit is False  # untrained weights do not
    interaction = HandoverSession(bundle, ["predictive"], False, 1000, max_steps=50)
    try:
        handed = interaction.run(("none", 0, "predictive", None, tmp_path / "handed.parquet"))
    finally:
        interaction.close()
    assert handed.transit is True  # the handover happened
    assert handed.expert_steps["scripted"] == SCRIPTED_IN_VICINITY
    assert handed.expert_steps["predictive"] == 50 - SCRIPTED_IN_VICINITY
    assert handed.stages == [False, False]
    # the traces: the state each action was chosen from, against the target it was heading for
    trace = read_trace(tmp_path / "scripted.parquet").to_pydict()
    assert trace["frame_index"] == list(range(50)) and set(trace["expert"]) == {"scripted"}
    state, target = np.array(trace["observation.state"]), np.array(trace["transit_target"])
    inside = (np.linalg.norm(state[:, :2] - target[:, :2], axis=1) <= VICINITY) & (
        (state[:, 2] - target[:, 2] >= 0) & (state[:, 2] - target[:, 2] <= VICINITY)
    )
    assert np.argmax(inside) == SCRIPTED_IN_VICINITY  # the row whose state is the first one in the vicinity
    handed_trace = read_trace(tmp_path / "handed.parquet").to_pydict()
    assert handed_trace["expert"] == ["scripted"] * SCRIPTED_IN_VICINITY + ["predictive"] * (50 - SCRIPTED_IN_VICINITY)
    assert handed_trace["observation.state"][:SCRIPTED_IN_VICINITY] == trace["observation.state"][:SCRIPTED_IN_VICINITY]
    p = handed_trace["gate.probability"]  # the gate's p(interaction) for each plan: none for the scripted expert
    assert p[:SCRIPTED_IN_VICINITY] == [None] * SCRIPTED_IN_VICINITY and None not in p[SCRIPTED_IN_VICINITY:]


class Descending(Station):
    """The stand-in station with a scripted expert that lowers the open gripper 1 cm a step from 16.5 cm."""

    def __init__(self):
        super().__init__(0.5, 0.0, 0.165)

    def gripper_closed(self, arm):
        return 0.0

    def expert(self):
        return self

    def act(self):
        self.eef = self.eef - [0.0, 0.0, 0.01]
        return np.zeros(7)


class Recording:
    """A PolicyActor stand-in that records what it is told."""

    name = "predictive"

    def __init__(self):
        self.calls = []

    def reset(self, env):
        self.calls.append(("reset", None))

    def observe(self, obs):
        self.calls.append(("observe", obs))

    def act(self, obs):
        self.calls.append(("act", obs))
        return np.zeros(7)


def test_the_handover_lets_the_expert_observe_the_scripted_step_before_it():
    """The expert's first plan reads the approach's last step as its previous observation (its motion: the gate's
    and an obs_steps-2 predictive expert's input), as it would in a whole episode."""
    env, actor = Descending(), Recording()
    handover = HandoverActor(actor)
    handover.reset(env)
    for t in range(6):
        handover.act(f"obs {t}")  # the scripted steps move the stand-in's gripper down
    # in the vicinity (up to 3 cm above the top at 0.10 m) from the 5th observation on: z 0.125
    assert handover.handover_step == 4
    assert actor.calls == [("reset", None), ("observe", "obs 3"), ("act", "obs 4"), ("act", "obs 5")]


def test_split_rows_count_transit_and_handed_over_stage_one_successes():
    def result(actor, protocol, transit, stages=(False, False)):
        return EpisodeResult(actor, protocol, 0, 1000, list(stages), 10, 0.0, transit=transit)

    moved = [result("reactive", "none", True), result("reactive", "none", False), result("reactive", "none", None)]
    held = [result("reactive", "none", True, (True, False)), result("reactive", "none", False, (True, False)),
            result("reactive", "none", True, (False, False))]  # fmt: skip
    (row,) = split_rows(moved, held, ["predictive", "reactive"], ["none", "position"])
    assert (row.transit, row.transit_episodes) == (1, 2)  # the episode without a measurement left out
    # stage 1 counts only after a handover (the scripted expert alone would have done it)
    assert (row.interaction, row.interaction_episodes, row.handed_over) == (1, 3, 2)
