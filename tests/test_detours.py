"""Recovery detours in scripted demonstrations (`harmowam collect --detour`): the scripted expert goes astray
before some waypoints and recovers; the detour frames are recorded per episode and never trained on."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from harmowam_cli.main import app
from harmowam_core import collect as collect_module
from harmowam_core.config import load_recipe
from harmowam_core.data.format import DatasetSpec, frame_runs, runs_mask
from harmowam_core.data.labels import LabelSettings, label_dataset
from harmowam_core.data.merge import merge_datasets
from harmowam_core.data.meta import episodes_files
from harmowam_core.data.reader import DatasetReader
from harmowam_core.data.writer import DatasetWriter
from harmowam_core.envs.base import Observation
from harmowam_core.envs.sim.tasks.base import DETOUR_RADIUS, DETOUR_RISE, ArmTarget, Waypoint, WaypointFollower
from harmowam_core.errors import DatasetError, ParameterError
from harmowam_core.models.presets import WorldModelConfig
from harmowam_core.models.world_model import WorldModel
from harmowam_core.training import experts as stage2

runner = CliRunner()


def test_detour_frames_are_stored_as_runs_and_read_back_as_a_mask():
    assert frame_runs([3, 4, 5, 9]) == [3, 6, 9, 10]
    assert frame_runs([]) == []
    np.testing.assert_array_equal(np.flatnonzero(runs_mask([3, 6, 9, 10], 12)), [3, 4, 5, 9])
    assert not runs_mask(None, 4).any() and runs_mask(None, 4).shape == (4,)
    for bad in ([3], [5, 3], [3, 6, 6, 8], [8, 13], [-1, 2]):
        with pytest.raises(DatasetError, match="detours"):
            runs_mask(bad, 12)


class PointArm:
    """A scene view of one arm that follows its commands (enough for the follower's arithmetic)."""

    def __init__(self, start=(0.0, 0.0, 0.3)):
        self.pos = np.array(start, dtype=float)

    def eef_pos(self, arm):
        return self.pos.copy()

    def eef_mat(self, arm):
        return np.eye(3)

    def gripper_closed(self, arm):
        return 0.0

    def run(self, follower, limit=2000):
        actions, detouring, targets, heights = [], [], [], []
        while not follower.done and len(actions) < limit:
            heights.append(self.pos[2])
            action = follower.act()
            targets.append(None if follower.current is None else follower.current.arms[0].pos.copy())
            actions.append(action)
            detouring.append(follower.detouring)
            self.pos += action[:3] / 3  # a commanded step is covered about a third (`Waypoint`)
        return np.array(actions), np.array(detouring), targets, np.array(heights)


def carry_plan():
    """Close in place, carry 10 cm sideways, descend 20 cm opening, go back up: the carry and the descent may be
    preceded by a detour, the grasp in place and the lift may not."""
    yield Waypoint([ArmTarget(np.array([0.0, 0.0, 0.3]), gripper=1.0)], hold=2)
    yield Waypoint([ArmTarget(np.array([0.1, 0.0, 0.3]), gripper=1.0)])
    yield Waypoint([ArmTarget(np.array([0.1, 0.0, 0.1]), gripper=0.0)])
    yield Waypoint([ArmTarget(np.array([0.1, 0.0, 0.3]), gripper=0.0)])


def runs_of(flags: np.ndarray) -> list[tuple[int, int]]:
    edges = frame_runs(np.flatnonzero(flags).tolist())
    return list(zip(edges[::2], edges[1::2], strict=True))


def test_a_detour_goes_beside_and_above_before_each_eligible_waypoint_and_the_plan_resumes():
    arm = PointArm()
    follower = WaypointFollower(arm, carry_plan(), [np.eye(3)], np.random.default_rng(0), noise=0.0, detour=1.0)
    actions, detouring, targets, heights = arm.run(follower)
    assert follower.done
    runs = runs_of(detouring)
    assert len(runs) == 2  # before the carry and before the descent; never before the grasp or the lift
    for start, end in runs:
        assert not detouring[start - 1]  # the flag starts with the detour's first action, not before
        target = targets[start]  # beside the next waypoint's target (0.1, 0), above where the arm is
        radius = np.linalg.norm(target[:2] - np.array([0.1, 0.0]))
        assert DETOUR_RADIUS[0] - 1e-9 <= radius <= DETOUR_RADIUS[1] + 1e-9
        assert DETOUR_RISE[0] - 1e-9 <= target[2] - heights[start] <= DETOUR_RISE[1] + 1e-9
        assert abs(heights[start] - 0.3) < 0.01
        assert (actions[start:end, 6] == 1.0).all()  # the gripper stays as the waypoint before left it (closed)
        assert not detouring[end]  # back on the plan
    np.testing.assert_allclose(arm.pos, [0.1, 0.0, 0.3], atol=0.01)  # and the plan still ends where it should


class TwoArms(PointArm):
    def __init__(self):
        self.arms = [np.array([0.0, 0.2, 0.3]), np.array([0.0, -0.2, 0.3])]

    def eef_pos(self, arm):
        return self.arms[arm].copy()

    def step(self, action):
        for arm in range(2):
            self.arms[arm] += action[7 * arm : 7 * arm + 3] / 3


def test_on_two_arms_an_arm_whose_move_may_not_detour_waits_during_the_others_detour():
    def plan():  # the left arm carries 10 cm sideways (eligible), the right arm lifts (not eligible)
        yield Waypoint([ArmTarget(np.array([0.0, 0.2, 0.3])), ArmTarget(np.array([0.0, -0.2, 0.3]))])
        yield Waypoint([ArmTarget(np.array([0.1, 0.2, 0.3])), ArmTarget(np.array([0.0, -0.2, 0.4]))])

    view = TwoArms()
    follower = WaypointFollower(view, plan(), [np.eye(3)] * 2, np.random.default_rng(1), noise=0.0, detour=1.0)
    flags, right = [], []
    while not follower.done:
        action = follower.act()
        flags.append(follower.detouring)
        view.step(action)
        right.append(view.arms[1].copy())
    ((start, end),) = runs_of(np.array(flags))
    right = np.array(right)
    assert np.abs(right[start:end] - right[start - 1]).max() < 1e-3  # the right arm waits...
    assert right[-1][2] > 0.39  # ...and lifts afterwards, on the plan


def test_no_detour_changes_nothing_and_a_bad_probability_is_refused():
    def run(detour, plan):
        arm = PointArm()
        follower = WaypointFollower(arm, plan(), [np.eye(3)], np.random.default_rng(3), detour=detour)
        return arm.run(follower)

    def in_place_and_up():  # nothing a detour may precede
        yield Waypoint([ArmTarget(np.array([0.0, 0.0, 0.3]), gripper=1.0)], hold=2)
        yield Waypoint([ArmTarget(np.array([0.0, 0.0, 0.4]), gripper=1.0)])

    plain, flags, *_ = run(0.0, in_place_and_up)
    always, always_flags, *_ = run(1.0, in_place_and_up)
    np.testing.assert_array_equal(plain, always)  # the expert's own random stream is untouched
    assert not flags.any() and not always_flags.any()
    assert not run(0.0, carry_plan)[1].any()
    with pytest.raises(ValueError, match="detour"):
        WaypointFollower(PointArm(), carry_plan(), [np.eye(3)], np.random.default_rng(0), detour=1.5)


class DetouringEnv:
    """A station whose expert detours during frames 2-4 of every episode of 8 steps."""

    instruction, num_arms, stage_names, operator_ended = "stack the cans", 1, ["beside", "on_top"], False

    def __init__(self, recipe):
        self.cameras = {c.role: (c.height, c.width) for c in recipe.cameras}
        self.t = 0

    def _obs(self):
        images = {r: np.full((h, w, 3), self.t, np.uint8) for r, (h, w) in self.cameras.items()}
        return Observation(images, np.full(7, self.t, np.float32), self.instruction)

    def reset(self, seed=None, ood="none"):
        self.t = 0
        return self._obs()

    def expert(self, detour=0.0):
        env = self

        class Pilot:
            detouring = False

            def act(self):
                self.detouring = detour > 0 and 2 <= env.t <= 4
                return np.full(7, env.t, np.float32)

        return Pilot()

    def step(self, action, images=True):
        self.t += 1
        return self._obs()

    def stage_success(self):
        return [self.t >= 8, self.t >= 8]

    def close(self):
        pass


def test_collect_records_each_episodes_detours_and_refuses_them_for_an_operator(tmp_path, monkeypatch):
    monkeypatch.setattr(collect_module, "make_env", DetouringEnv)
    recipe = load_recipe("stack_cans")
    out = tmp_path / "ds"
    collect_module.collect(recipe, out, 2, detour=0.5, workers=1)
    reader = DatasetReader(out)
    first = reader.episode_slice(0)
    np.testing.assert_array_equal(np.flatnonzero(reader.detour[first]), [2, 3, 4])
    assert reader.detour.sum() == 6 and reader.episodes[1]["detours"] == [2, 5]
    plain = tmp_path / "plain"
    collect_module.collect(recipe, plain, 1, workers=1)
    assert not DatasetReader(plain).detour.any()
    with pytest.raises(ParameterError, match="scripted expert"):
        collect_module.collect(recipe, tmp_path / "op", 1, detour=0.5, teleop="keyboard")
    result = runner.invoke(app, ["collect", "--task", "stack_cans", "--teleop", "keyboard", "--detour", "0.5",
                                 "--out", str(tmp_path / "op2")])  # fmt: skip
    assert result.exit_code == 2 and "--detour: applies to the scripted expert" in result.output
    assert not (tmp_path / "op2").exists()


def without_detours_column(root):
    """Make `root` look like a dataset written before episodes recorded their detours."""
    for path in episodes_files(root):
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["detours"]), path)


def test_detours_survive_appending_to_and_merging_with_a_dataset_from_before_them(tmp_path, monkeypatch):
    monkeypatch.setattr(collect_module, "make_env", DetouringEnv)
    recipe = load_recipe("stack_cans")
    old = tmp_path / "old"
    collect_module.collect(recipe, old, 1, workers=1)
    without_detours_column(old)
    new = tmp_path / "new"
    collect_module.collect(recipe, new, 1, detour=0.5, workers=1, seed=50)
    merged = merge_datasets(tmp_path / "merged", [old, new])
    assert merged is not None
    reader = DatasetReader(tmp_path / "merged")
    n = int(reader.lengths[0])  # the old episode comes first
    np.testing.assert_array_equal(np.flatnonzero(reader.detour), [n + 2, n + 3, n + 4])
    collect_module.collect(recipe, old, 1, detour=0.5, workers=1)  # appending to the old dataset
    reader = DatasetReader(old)
    assert [r["detours"] for r in reader.episodes] == [[], [2, 5]]
    assert pq.read_table(episodes_files(old)[0]).schema.field("detours").type.value_type == "int64"


def test_expert_windows_never_start_in_a_detour_and_pad_its_actions(tmp_path):
    cameras = {"front": (32, 32), "top": (16, 16), "wrist": (16, 16)}
    root = tmp_path / "ds"
    with DatasetWriter(root, DatasetSpec(fps=10, cameras=cameras), task_name="stack_cans",
                       stage_names=["beside", "on_top"]) as writer:  # fmt: skip
        for e, n in enumerate((18, 16)):
            with writer.episode("stack the cans") as ep:
                for t in range(n):
                    ep.add_frame(np.full(7, t, np.float32), np.full(7, t, np.float32),
                                 {c: np.full((h, w, 3), 8 * t, np.uint8) for c, (h, w) in cameras.items()})  # fmt: skip
                ep.save([True, True], detours=[5, 8] if e == 0 else None)
    label_dataset(root, LabelSettings(window=2))
    wm_dir = tmp_path / "wm"
    torch.manual_seed(0)
    WorldModel.from_config(WorldModelConfig(resolution=[32, 32])).save_pretrained(wm_dir)
    recipe = load_recipe("stack_cans", [
        "model.overrides={world_model: {resolution: [32, 32]}, predictive_expert: {image_size: 32}, "
        "reactive_expert: {image_size: 32}}",
        "train_experts={held_out_episodes: 1, window_stride: 1}",
    ])  # fmt: skip
    trainer = stage2.ExpertsTrainer(recipe, root, wm_dir, tmp_path / "e")
    windows = trainer._windows(WorldModel.from_pretrained(wm_dir), [0], None)
    starts = [t for _, t in windows.index]
    assert starts == [t for t in range(18) if t not in (5, 6, 7)]
    first = windows[0]  # frames 0-11: the detour's frames 5-7 carry no loss
    np.testing.assert_array_equal(np.flatnonzero(first["action_is_pad"].numpy()), [5, 6, 7])
    assert windows[starts.index(8)]["action_is_pad"].sum() == 2  # frames 8-19: only the two past the end
