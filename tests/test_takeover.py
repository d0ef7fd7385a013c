"""Takeovers (`harmowam collect --takeover`, DAgger): a learned policy drives each scene first, then the scripted
expert takes over from the state it left and finishes the task; the policy's frames are recorded but never
trained on."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from harmowam_cli.main import app
from harmowam_core import collect as collect_module
from harmowam_core.collect import Takeover, parse_takeover_steps
from harmowam_core.config import load_recipe
from harmowam_core.data.meta import read_episode_rows
from harmowam_core.data.reader import DatasetReader
from harmowam_core.envs.base import Observation
from harmowam_core.envs.sim.station import SimStation
from harmowam_core.envs.sim.tasks import resumable_task_names
from harmowam_core.errors import ParameterError
from harmowam_core.policy.bundle import export_bundle, untrained_run

runner = CliRunner()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Untrained tiny bundles of stack_cans and pour_coke (what drives first does not need to be any good)."""
    root = tmp_path_factory.mktemp("takeover")
    made = {}
    for task in ("stack_cans", "pour_coke"):
        untrained_run(root / "runs" / task, load_recipe(task), resolution=32)
        made[task] = export_bundle(root / "runs" / task, root / "bundles", name=task)
    return made


@pytest.fixture(scope="module")
def station():
    made = SimStation(load_recipe("stack_cans"), render=False)
    yield made
    made.close()


def expert_until(station, done, limit=400):
    """Steps of the scripted expert from a reset scene until `done(station)`; the steps taken."""
    expert = station.expert()
    for step in range(limit):
        station.step(expert.act())
        if done(station):
            return step + 1
    raise AssertionError("the scripted expert never got there")


def finish(station, limit=400) -> tuple[list[bool], list[np.ndarray], np.ndarray]:
    """A new scripted expert from the scene as it is: the stages reached, its actions and can1's xy at each step."""
    expert, actions, can1 = station.expert(), [], []
    for _ in range(limit):
        actions.append(expert.act())
        station.step(actions[-1])
        can1.append(station.view.pos("can1")[:2].copy())
        if all(station.stage_success()):
            break
    return station.stage_success(), actions, np.array(can1)


@pytest.mark.sim
def test_the_stack_cans_expert_takes_over_with_a_can_in_its_fingers(station):
    station.reset(seed=3)
    view = station.view
    expert_until(station, lambda s: view.grasping(0, "can1") and view.pos("can1")[2] > station.task.half + 0.05)
    stages, actions, _ = finish(station)
    assert stages == [True, True]
    held = next(i for i, a in enumerate(actions) if a[6] < 0.5)  # the first release: the can is beside the first
    assert held > 10 and np.linalg.norm(view.pos("can1")[:2] - view.pos("can0")[:2]) < 2 * station.task.radius + 0.02


@pytest.mark.sim
def test_the_stack_cans_expert_takes_over_after_the_first_stage_and_goes_for_the_third_can(station):
    station.reset(seed=4)
    view = station.view
    expert_until(station, lambda s: s.stage_success()[0])
    start, placed = view.pos("can2").copy(), view.pos("can1")[:2].copy()
    stages, actions, can1 = finish(station)
    assert stages == [True, True]
    assert np.abs(can1 - placed).max() < 0.005  # the second can, already placed, was never picked again
    first_grasp = next(i for i, a in enumerate(actions) if a[6] > 0.5)
    assert first_grasp > 0 and np.linalg.norm(start[:2] - view.pos("can0")[:2]) > 0.05  # the third went on top


class TakeoverEnv:
    """A station whose observations count its steps; its expert acts 7.0 and the task succeeds at step 12."""

    instruction, num_arms, stage_names, operator_ended = "stack the cans", 1, ["beside", "on_top"], False

    def __init__(self, recipe):
        self.cameras = {c.role: (c.height, c.width) for c in recipe.cameras}
        self.t, self.actions = 0, []

    def _obs(self):
        images = {r: np.full((h, w, 3), 5 * self.t, np.uint8) for r, (h, w) in self.cameras.items()}
        return Observation(images, np.r_[np.full(6, 0.01 * self.t), 0.0].astype(np.float32), self.instruction)

    def reset(self, seed=None, ood="none"):
        self.t, self.actions = 0, []
        return self._obs()

    def expert(self, detour=0.0):
        class Pilot:
            detouring = False

            def act(self):
                return np.full(7, 7.0, np.float32)

        return Pilot()

    def step(self, action, images=True):
        self.t += 1
        self.actions.append(np.asarray(action))
        return self._obs()

    def stage_success(self):
        return [self.t >= 12, self.t >= 12]

    def close(self):
        pass


def test_the_policy_drives_first_and_its_frames_are_never_the_experts(tmp_path, monkeypatch, bundles):
    monkeypatch.setattr(collect_module, "make_env", TakeoverEnv)
    recipe = load_recipe("stack_cans")
    takeover = Takeover(bundles["stack_cans"], "gate", (2, 6))
    out = tmp_path / "ds"
    stats = collect_module.collect(recipe, out, 3, workers=1, seed=100, takeover=takeover)
    reader = DatasetReader(out)
    assert stats.saved == 3 and [r["seed"] for r in reader.episodes] == [100, 101, 102]
    for k, row in enumerate(reader.episodes):
        driven = takeover.steps_for(row["seed"])
        assert 2 <= driven <= 6 and row["detours"] == [0, driven]  # the policy's steps, never trained on
        actions = reader.action[reader.episode_slice(k)]
        assert len(actions) == 12 + collect_module.SETTLE_FRAMES
        assert (actions[driven:] == 7.0).all() and not (actions[:driven] == 7.0).all(axis=1).any()
    assert len({takeover.steps_for(s) for s in range(100, 120)}) > 1  # drawn per scene, the same every time
    assert [takeover.steps_for(s) for s in range(5)] == [takeover.steps_for(s) for s in range(5)]


def test_a_policy_that_finishes_alone_leaves_nothing_to_record(tmp_path, monkeypatch, bundles):
    monkeypatch.setattr(collect_module, "make_env", TakeoverEnv)
    out = tmp_path / "ds"
    stats = collect_module.collect(load_recipe("stack_cans"), out, 1, workers=1, keep_failures=True,
                                   takeover=Takeover(bundles["stack_cans"], "gate", (20, 20)))  # fmt: skip
    assert stats.saved == 0 and stats.attempted == 1 and read_episode_rows(out) == []
    assert stats.policy_finished == 1 and stats.successes == 0 and stats.stage_counts == [0, 0]


def test_takeover_steps_parse_and_bad_takeovers_are_refused_before_anything_starts(tmp_path, bundles):
    assert parse_takeover_steps("20-300") == (20, 300) and parse_takeover_steps("150") == (150, 150)
    for bad in ("0-5", "9-3", "a-b", "1-2-3", ""):
        with pytest.raises(ParameterError, match="takeover-steps"):
            parse_takeover_steps(bad)
    assert "stack_cans" in resumable_task_names() and "pour_coke" not in resumable_task_names()

    def collect(*extra):
        out = tmp_path / "refused"
        args = ["collect", "--task", "stack_cans", "--episodes", "1", "--out", str(out), "--workers", "1", *extra]
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output and not out.exists(), result.output
        return " ".join(result.output.split())

    stack, pour = str(bundles["stack_cans"]), str(bundles["pour_coke"])
    assert "trained on pour_coke, not stack_cans" in collect("--takeover", pour)
    assert "--takeover-steps: must be N or FIRST-LAST" in collect("--takeover", stack, "--takeover-steps", "5-1")
    assert "--takeover-steps: must be 1 <= FIRST <= LAST < the step limit 400" in collect(
        "--takeover", stack, "--takeover-steps", "20-400"
    )
    assert "--takeover-router: unknown router 'best'" in collect("--takeover", stack, "--takeover-router", "best")
    assert "--takeover-steps applies with --takeover BUNDLE" in collect("--takeover-steps", "20-30")
    assert "not a HarmoWAM bundle" in collect("--takeover", str(tmp_path))
    assert "scripted expert takes over" in collect("--takeover", stack, "--teleop", "keyboard")
    result = runner.invoke(app, ["collect", "--task", "pour_coke", "--episodes", "1", "--out", str(tmp_path / "p"),
                                 "--takeover", pour])  # fmt: skip
    assert result.exit_code == 2 and "cannot yet take over" in result.output and not (tmp_path / "p").exists()


@pytest.mark.sim
def test_a_takeover_on_the_simulated_station_records_the_policys_steps_then_the_experts(tmp_path, bundles):
    small = [f"cameras.{i}.{side}=32" for i in range(3) for side in ("height", "width")]
    recipe = load_recipe("stack_cans", small)
    out = tmp_path / "ds"
    takeover = Takeover(bundles["stack_cans"], "gate", (3, 3))
    stats = collect_module.collect(recipe, out, 1, workers=1, seed=7, keep_failures=True, takeover=takeover)
    reader = DatasetReader(out)
    assert stats.saved == 1 and reader.episodes[0]["detours"] == [0, 3]
    actions = reader.action[reader.episode_slice(0)]
    assert np.isfinite(actions).all() and len(actions) > 100  # the expert went on after the policy's 3 steps
    assert reader.frames(0, "front", range(4)).shape == (4, 32, 32, 3)
