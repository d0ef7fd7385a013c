"""The simulated station: protocol, cameras, scripted experts, stage predicates, OOD variants, collect."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harmowam_core.config import load_recipe
from harmowam_core.envs import Env
from harmowam_core.envs.commands import UnsafeCommand
from harmowam_core.envs.sim.scene import MAX_DELTA_ROT
from harmowam_core.envs.sim.station import SimStation
from harmowam_core.envs.sim.tasks import sim_task_names, task_for
from harmowam_core.errors import HarmoWAMError
from harmowam_core.geometry import euler_to_mat, mat_to_euler, mat_to_rotvec, rotvec_to_mat

pytestmark = pytest.mark.sim
SIM_TASKS = sim_task_names()


@pytest.fixture(scope="module")
def stations():
    """One station per task, shared by this module (building a robosuite scene takes seconds)."""
    made: dict[tuple[str, bool], SimStation] = {}

    def get(task: str, render: bool = False) -> SimStation:
        if (task, render) not in made:
            made[(task, render)] = SimStation(load_recipe(task), render=render)
        return made[(task, render)]

    yield get
    for station in made.values():
        station.close()


def run_expert(station: SimStation, seed: int, ood: str = "none") -> list[bool]:
    station.reset(seed=seed, ood=ood)
    expert = station.expert()
    for _ in range(station.recipe.max_episode_steps):
        station.step(expert.act())
        if all(station.stage_success()):
            break
    return station.stage_success()


# ------------------------------------------------------------------------------------------ geometry
@given(st.lists(st.floats(-1.4, 1.4), min_size=3, max_size=3))
def test_euler_and_rotvec_round_trip(angles):
    m = euler_to_mat(np.array(angles))
    np.testing.assert_allclose(euler_to_mat(mat_to_euler(m)), m, atol=1e-9)
    np.testing.assert_allclose(rotvec_to_mat(mat_to_rotvec(m)), m, atol=1e-9)


# ------------------------------------------------------------------------------------------ protocol
@pytest.mark.parametrize("task", SIM_TASKS)
def test_resets_steps_and_renders_every_camera(stations, task):
    station = stations(task, render=True)
    assert isinstance(station, Env)
    recipe = station.recipe
    obs = station.reset(seed=0)
    obs = station.step(np.zeros(7 * station.num_arms))
    assert set(obs.images) == {c.role for c in recipe.cameras}
    for cam in recipe.cameras:
        img = obs.images[cam.role]
        assert img.shape == (cam.height, cam.width, 3) and img.dtype == np.uint8
        assert img.std() > 5  # a real picture, not a blank buffer
    assert obs.state.shape == (7 * station.num_arms,) and obs.instruction == recipe.instruction
    assert station.stage_success() == [False] * len(recipe.stages)


def test_a_step_without_images_renders_nothing_and_changes_no_rendered_image(stations):
    """`step(images=False)` skips the cameras; the steps that do render show exactly what they show when every
    step renders (robosuite samples a camera at a fixed physics substep: its sampling clock must not move)."""
    station = stations("stack_cans", render=True)
    first = station.reset(seed=5)
    sim = station.raw_env.sim
    renders, render = [], sim.render
    sim.render = lambda *a, **k: renders.append(1) or render(*a, **k)  # count what robosuite renders

    def images(pattern: list[bool]) -> dict[int, list[np.ndarray]]:
        obs = station.reset(seed=5)
        for a, b in zip(obs.images.values(), first.images.values(), strict=True):
            np.testing.assert_array_equal(a, b)  # also after a step that skipped its images
        expert, seen = station.expert(), {}
        for t, wanted in enumerate(pattern):
            obs = station.step(expert.act(), images=wanted)
            assert bool(obs.images) == wanted
            if wanted:
                seen[t] = [obs.images[c] for c in sorted(obs.images)]
        return seen

    try:
        every = images([True] * 12)
        renders.clear()
        some = images([t % 4 in (2, 3) for t in range(12)] + [False])
    finally:
        sim.render = render
    assert sorted(some) == [2, 3, 6, 7, 10, 11]
    assert len(renders) == 3 * (1 + 6)  # three cameras: the reset's observation and the six steps asked for
    for t, frames in some.items():
        for a, b in zip(frames, every[t], strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(every[2][0], every[11][0])  # the arm moved: the comparison can tell frames apart
    again = station.reset(seed=5)  # after a step without images
    for a, b in zip(again.images.values(), first.images.values(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_actions_move_the_arm_in_the_table_frame(stations):
    station = stations("stack_cans")
    station.reset(seed=0)
    start = station.state().copy()
    for _ in range(15):
        station.step(np.array([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    moved = station.state() - start
    assert moved[0] > 0.05 and abs(moved[1]) < 0.02 and abs(moved[2]) < 0.02
    for _ in range(15):
        station.step(np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.05, 1.0]))
    state = station.state()
    assert state[5] - start[5] > 0.1  # yaw turned about the vertical (OSC tracks part of each command)
    assert state[6] > 0.8  # gripper closed on nothing


def test_wrong_action_shape_and_ood_are_rejected(stations):
    station = stations("stack_cans")
    station.reset(seed=0)
    with pytest.raises(UnsafeCommand, match="shape"):
        station.step(np.zeros(14))
    with pytest.raises(HarmoWAMError, match="unknown OOD"):
        station.reset(seed=0, ood="weather")


# ------------------------------------------------------------------------------------------ experts
@pytest.mark.parametrize("task", SIM_TASKS)
@pytest.mark.parametrize("seed", [0, 1])
def test_scripted_expert_completes_every_stage(stations, task, seed):
    assert run_expert(stations(task), seed) == [True] * len(load_recipe(task).stages)


# ------------------------------------------------------------------------------------------ predicates
def _set_pose(station, name, pos, quat=(1.0, 0.0, 0.0, 0.0)):
    env = station.raw_env
    obj = env.task_objects[name]
    env.sim.data.set_joint_qpos(obj.joints[0], np.r_[np.asarray(pos) + np.array([0, 0, 0.8]), quat])
    env.sim.forward()


def test_the_simulated_gripper_has_the_real_stations_hysteresis(stations):
    """robosuite integrates the finger command's sign: sent as 2a - 1, ten steps of 0.49 opened a closed grasp
    (closure 0.977 -> 0.174). Through the 0.4 / 0.6 hysteresis an undecided 0.49 holds it; 0.3 opens it."""
    station = stations("stack_cans")
    station.reset(seed=0)
    closing = np.r_[np.zeros(6), 1.0]
    for _ in range(15):
        station.step(closing)
    closed = station.state()[6]
    assert closed > 0.9
    for command in (0.49, 0.55, 0.41):
        for _ in range(10):
            station.step(np.r_[np.zeros(6), command])
        assert station.state()[6] > closed - 0.02, command
    for _ in range(15):
        station.step(np.r_[np.zeros(6), 0.3])
    assert station.state()[6] < 0.1
    for _ in range(10):  # open: an undecided 0.55 does not close it
        station.step(np.r_[np.zeros(6), 0.55])
    assert station.state()[6] < 0.1
    with pytest.raises(UnsafeCommand, match="non-finite"):
        station.step(np.r_[np.zeros(6), np.nan])


@pytest.mark.parametrize(("index", "value"), [(6, np.nan), (0, np.inf), (3, -np.inf), (4, np.nan)])
def test_a_non_finite_action_is_refused_as_on_the_real_station_and_the_sim_goes_on(stations, index, value):
    """NaN or inf reached MuJoCo before: no error, every control zeroed, and a NaN gripper command stayed in
    robosuite's gripper state, zeroing every later step. Now it is the real station's `UnsafeCommand`, nothing
    of it reaches the simulator, and the next valid steps move the arm and close the gripper."""
    station = stations("stack_cans")
    station.reset(seed=0)
    station.step(np.zeros(7))
    qpos, steps = station.raw_env.sim.data.qpos.copy(), station.steps
    bad = np.zeros(7)
    bad[index] = value
    with pytest.raises(UnsafeCommand, match="non-finite action rejected"):
        station.step(bad)
    np.testing.assert_array_equal(station.raw_env.sim.data.qpos, qpos)  # not one physics step taken
    assert station.steps == steps
    start = station.state().copy()
    for _ in range(15):
        station.step(np.array([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]))
    moved = station.state() - start
    assert moved[0] > 0.05 and abs(moved[1]) < 0.02  # the arm follows +x
    assert station.state()[6] > 0.8  # and the gripper closed: no NaN left in its state


@pytest.mark.parametrize("roll", [1e6, -1e6])
def test_a_huge_roll_is_saturated_not_wrapped(stations, roll):
    """Euler angles of 1e6 rad used to wrap (1e6 mod 2 pi) to an arbitrary rotation before the limit; each angle
    is saturated to MAX_DELTA_ROT first, so the step is exactly a roll of MAX_DELTA_ROT its own way."""
    station = stations("stack_cans")
    native = station._native_action(np.array([0.0, 0.0, 0.0, roll, 0.0, 0.0, 0.0]))
    np.testing.assert_allclose(native[3:6], [np.sign(roll) * MAX_DELTA_ROT, 0.0, 0.0], atol=1e-12)
    turned = []
    for command in (roll, np.sign(roll) * MAX_DELTA_ROT):  # the same scene, the huge and the saturated roll
        start = station.reset(seed=0).state
        for _ in range(3):
            station.step(np.array([0.0, 0.0, 0.0, command, 0.0, 0.0, 0.0]))
        turned.append(station.state() - start)
    np.testing.assert_array_equal(turned[0], turned[1])
    assert np.sign(turned[0][3]) == np.sign(roll) and abs(turned[0][3]) > 0.05  # it rolled, its own way


def test_stack_predicates_true_then_false_when_knocked_over(stations):
    station = stations("stack_cans")
    task = station.task
    station.reset(seed=3)
    assert task.predicates(station.view) == [False, False]
    a = station.view.pos("can0")
    h, r = task.half, task.radius
    _set_pose(station, "can1", a + np.array([0.0, 2 * r + 0.004, 0.0]))
    _set_pose(station, "can2", a + np.array([0.0, 0.0, 2 * h + 0.001]))
    assert task.predicates(station.view) == [True, True]
    _set_pose(station, "can0", a + np.array([0.0, 0.0, r - h]), (0.7071, 0.7071, 0.0, 0.0))  # on its side
    assert task.predicates(station.view) == [False, False]


def test_fruit_on_plate_predicate(stations):
    station = stations("pick_fruit")
    station.reset(seed=2)
    plate = station.view.pos("plate")
    assert station.task.predicates(station.view) == [False, False]
    _set_pose(station, "banana", plate + np.array([0.03, 0.0, 0.03]))
    for _ in range(150):
        station.raw_env.sim.step()
    assert station.task.predicates(station.view)[0]
    _set_pose(station, "banana", plate + np.array([0.25, 0.0, 0.02]))  # dropped beside the plate
    for _ in range(150):
        station.raw_env.sim.step()
    assert not station.task.predicates(station.view)[0]


def test_pour_predicate_counts_spheres_in_the_beaker_and_spills(stations):
    station = stations("pour_coke")
    station.reset(seed=1)
    view, task = station.view, station.task
    assert task.predicates(view) == [False, False]
    beaker = view.pos("beaker")
    drops = [f"drop{i}" for i in range(8)]
    for i, name in enumerate(drops):  # all inside the beaker, stacked
        offset = np.array([(i % 2 - 0.5) * 0.03, (i // 2 % 2 - 0.5) * 0.03, -0.02 + i * 0.004])
        _set_pose(station, name, beaker + offset)
    assert task.predicates(view)[1]
    for i, name in enumerate(drops[:5]):  # five spilled on the table
        _set_pose(station, name, beaker + np.array([-0.15, -0.1 + 0.03 * i, 0.0075 - beaker[2]]))
    assert not task.predicates(view)[1]


def test_flower_predicates_inserted_and_dropped(stations):
    from harmowam_core.envs.sim.tasks.flowers import STEM_HALF, VASE_WALL

    station = stations("flowers")
    station.reset(seed=2)
    view, task = station.view, station.task
    assert task.predicates(view) == [False, False, False]
    vase = view.pos("vase")
    upright = (0.7071, 0.0, -0.7071, 0.0)  # the stem's axis (local x) turned onto world z, blossom up
    _set_pose(station, "flower", np.r_[vase[:2], VASE_WALL + 0.012 + STEM_HALF], upright)
    assert task.predicates(view) == [False, False, True]
    _set_pose(station, "flower", np.r_[vase[:2] + [0.0, 0.25], 0.006])  # dropped on the table
    assert task.predicates(view) == [False, False, False]


def test_write_yes_scores_traces_against_letter_templates(stations):
    from harmowam_core.envs.sim.tasks.write_yes import densify, letter_strokes, score_letter

    def dense(letter):
        return densify(letter_strokes(letter), spacing=0.003)

    assert score_letter(dense("Y"), "Y") == (1.0, 1.0)
    assert min(score_letter(dense("e"), "Y")) < 0.5  # an "e" is not a "Y"
    assert min(score_letter(dense("s"), "e")) < 0.9  # nor an "s" an "e"
    assert score_letter(np.zeros((0, 2)), "s") == (0.0, 0.0)
    station = stations("write_yes")
    station.reset(seed=0)
    task = station.task
    assert task.predicates(station.view) == [False, False, False]
    task.trace = [p + [task.slot(k), 0.0] for k, letter in enumerate("Yes") for p in dense(letter)]
    assert task.predicates(station.view) == [True, True, True]
    task.trace = [p + [task.slot(k), 0.0] for k, letter in enumerate("Yse") for p in dense(letter)]
    assert task.predicates(station.view) == [True, False, False]  # letters in the wrong slots


def test_bag_zip_predicates_item_inside_zipper_closed_bag_displaced(stations):
    from harmowam_core.envs.sim.tasks.bag_zip import MOVED_END

    station = stations("bag_zip")
    station.reset(seed=1)
    view, task, sim = station.view, station.task, station.raw_env.sim
    assert task.predicates(view) == [False] * 5
    bag = view.pos("bag")
    floor = bag[2] - task.shape.height / 2
    _set_pose(station, "item", np.r_[bag[:2], floor + 0.03])  # dropped into the bag
    assert task.item_in_bag(view) and task.predicates(view)[1]
    slide = sim.model.get_joint_qpos_addr("bag_pull_root_joint0")
    sim.data.qpos[slide] = task.shape.travel  # the pull at the end of the opening
    sim.forward()
    task.on_step(view)
    assert task.predicates(view)[4]
    flap = sim.model.geom_size[sim.model.geom_name2id("bag_shell_flap_vis")]
    assert flap[0] == pytest.approx(task.shape.travel / 2)  # the opening is seen closed up to the pull
    sim.data.qpos[slide] = task.shape.travel / 2  # half closed
    sim.forward()
    assert not task.predicates(view)[4]
    sim.data.qpos[slide] = task.shape.travel
    item = view.pos("item")
    bag_qpos = sim.model.get_joint_qpos_addr("bag_joint0")
    sim.data.qpos[bag_qpos[0] : bag_qpos[0] + 2] += [0.0, MOVED_END + 0.02]  # dragged along without holding
    _set_pose(station, "item", item + [0.0, MOVED_END + 0.02, 0.0])
    assert task.item_in_bag(view) and not task.predicates(view)[4]
    _set_pose(station, "item", np.r_[bag[:2] + [0.0, 0.2], 0.02])  # the item on the table, not in the bag
    assert not task.item_in_bag(view)


def test_stages_count_only_in_order(stations):
    station = stations("stack_cans")
    station.reset(seed=4)
    a = station.view.pos("can0")
    _set_pose(station, "can2", a + np.array([0.0, 0.0, 2 * station.task.half + 0.001]))  # S2 without S1
    for _ in range(10):
        station.step(np.zeros(7))
    assert station.stage_success() == [False, False]


# ------------------------------------------------------------------------------------------ OOD
@pytest.mark.parametrize("task", SIM_TASKS)
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_position_ood_never_in_training_region(task, seed):
    recipe = load_recipe(task)
    sim_task = task_for(recipe)
    sim_task.build(sim_task.variant(None))
    rng = np.random.default_rng(seed)
    train, test = recipe.ood.position.train_region, recipe.ood.position.test_region
    ood = sim_task.place(rng, test)
    ind = sim_task.place(rng, train)
    for name in sim_task.region_objects:
        assert not train.contains(ood[name].x, ood[name].y)
        assert test.contains(ood[name].x, ood[name].y)
        assert train.contains(ind[name].x, ind[name].y)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_background_scenes_have_five_to_eight_distractors(stations, seed):
    station = stations("stack_cans")
    station.reset(seed=seed, ood="background")
    assert 5 <= station.visible_distractors() <= 8
    station.reset(seed=seed, ood="none")
    assert station.visible_distractors() == 0


def test_objects_ood_builds_the_substitutes(stations):
    station = stations("stack_cans")
    station.reset(seed=0, ood="objects")
    assert station.task.kind == "redbull_can"
    station.reset(seed=0)
    assert station.task.kind == "coke_can"


def test_unknown_substitute_is_a_user_error():
    recipe = load_recipe("stack_cans", ["ood.objects.substitutes.coke_can=fanta_can"])
    with pytest.raises(HarmoWAMError, match="fanta_can"):
        task_for(recipe).variant(recipe.ood.objects.substitutes)


# ------------------------------------------------------------------------------------------ collect
@pytest.mark.parametrize("task, camera, width", [("stack_cans", "front", 7), ("flowers", "global", 14)])
def test_collect_writes_a_dataset_the_reader_and_label_accept(tmp_path, task, camera, width):
    from typer.testing import CliRunner

    from harmowam_cli.main import app
    from harmowam_core.data.reader import DatasetReader

    out = tmp_path / "data"
    overrides = ["--set", "max_episode_steps=12"] + [
        arg for i in range(3) for arg in ("--set", f"cameras.{i}.height=32", "--set", f"cameras.{i}.width=32")
    ]
    runner = CliRunner()
    result = runner.invoke(
        app, ["collect", "--task", task, "--episodes", "2", "--out", str(out), "--keep-failures", *overrides]
    )
    assert result.exit_code == 0, result.output
    reader = DatasetReader(out)
    assert len(reader.episodes) == 2 and len(reader.action) == 24
    assert reader.action.shape[1] == width and reader.state.shape[1] == width
    frames = reader.frames(0, camera, [0, 11])
    assert frames.shape[-2:] == (32, 32) or frames.shape[1:3] == (32, 32)
    result = runner.invoke(app, ["label", str(out)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "stack_cans", "--ood", "weather"], "--ood"),
        (["--task", "no_such_task"], "no_such_task"),
        (["--task", "stack_cans", "--episodes", "0"], "episodes"),
    ],
)
def test_collect_user_errors_exit_2(tmp_path, args, message):
    from typer.testing import CliRunner

    from harmowam_cli.main import app

    result = CliRunner().invoke(app, ["collect", *args, "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


# ------------------------------------------------------------------------------------------ teleop
class FakeDevice:
    """A robosuite input device at its interface (`start_control`, `get_controller_state`, the device's own
    output scaling, `active_robot`): replays a script of (dpos, grasp, reset) inputs."""

    def __init__(self, script, active_robot=0):
        self.script, self.active_robot, self.started = list(script), active_robot, 0

    def start_control(self):
        self.started += 1

    def get_controller_state(self):
        dpos, grasp, reset = self.script.pop(0) if self.script else ((0.0, 0.0, 0.0), False, True)
        return {"dpos": np.array(dpos), "raw_drotation": np.zeros(3), "grasp": grasp, "reset": reset}

    def _postprocess_device_outputs(self, dpos, drotation):
        return np.clip(dpos * 75, -1, 1), np.clip(drotation * 1.5, -1, 1)


def test_teleop_moves_the_active_arm_and_toggles_its_gripper(stations):
    from harmowam_core.envs.sim.teleop import DeviceTeleop

    station = stations("flowers")
    obs = station.reset(seed=0)
    start = station.state().copy()
    device = FakeDevice([((0.01, 0.0, 0.0), True, False)] * 15 + [((0.0, 0.0, 0.0), False, True)], active_robot=0)
    pilot = DeviceTeleop(device, num_arms=2, fps=1000.0, show=False)
    assert pilot.active_arm() == 1  # robosuite's robot 0 is our right arm
    while not pilot.stopped:
        action = pilot.act(obs)
        assert action.shape == (14,) and np.all(np.abs(action[:3]) < 1e-9)  # the left arm is not commanded
        obs = station.step(action)
    moved = station.state() - start
    assert moved[7] > 0.05 and abs(moved[0]) < 0.01  # the right arm went +x, the left stayed
    assert station.state()[13] > 0.8 and station.state()[6] < 0.2  # right gripper closed, left open
    assert device.started == 1


def test_collect_by_teleop_records_until_the_operator_ends_the_episode(tmp_path, monkeypatch):
    from harmowam_core.collect import collect
    from harmowam_core.data.reader import DatasetReader
    from harmowam_core.envs.sim import teleop

    device = FakeDevice([((0.0, 0.0, 0.005), False, False)] * 9)
    monkeypatch.setattr(teleop, "open_device", lambda kind, station: device)
    monkeypatch.setattr(teleop, "show_cameras", lambda obs: None)
    recipe = load_recipe(
        "stack_cans", [f"cameras.{i}.{k}=32" for i in range(3) for k in ("height", "width")] + ["fps=1000"]
    )
    stats = collect(recipe, tmp_path / "d", 1, teleop="keyboard", keep_failures=True)
    assert stats.saved == 1 and stats.steps == 9  # the tenth input was the operator's reset
    reader = DatasetReader(tmp_path / "d")
    assert reader.action.shape == (9, 7) and np.all(reader.action[:, 2] > 0)  # upward, as commanded


def test_teleop_devices_fail_clearly_without_a_desktop(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from harmowam_cli.main import app

    monkeypatch.delenv("DISPLAY", raising=False)
    runner = CliRunner()
    result = runner.invoke(app, ["collect", "--task", "stack_cans", "--teleop", "joystick", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--teleop: must be one of" in result.output
    result = runner.invoke(
        app, ["collect", "--task", "stack_cans", "--teleop", "keyboard", "--out", str(tmp_path / "k")]
    )
    assert result.exit_code == 2 and "--teleop: keyboard cannot start" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "k").exists()
