"""The real station's arm layer against a fake `franky` module (nothing here reaches a robot): the station
configuration, clamping, per-step and step-to-step limits, NaN/inf rejection, delta-to-Cartesian conversion,
gripper hysteresis and minimum hold, the watchdog, a refused connection, and the dry run."""

from __future__ import annotations

import pickle
import threading
import time

import numpy as np
import pytest
import yaml
from fakes import STATION, FakeFranky
from hypothesis import given, settings
from hypothesis import strategies as st

from harmowam_core.envs.real.arm import DryRunArm, FrankyArm
from harmowam_core.envs.real.config import StationConfigError, load_station_config, station_config_from_data
from harmowam_core.envs.real.safety import ArmGuard, GripperHysteresis, Reflex, UnsafeCommand, Watchdog
from harmowam_core.errors import HarmoWAMError
from harmowam_core.geometry import euler_to_mat, mat_to_rotvec, quat_to_mat


def arm_config(**overrides):
    data = yaml.safe_load(yaml.safe_dump(STATION))
    data["arms"][0].update(overrides)
    return station_config_from_data(data).arms[0]


def rotation_angle(a, b) -> float:
    return float(np.linalg.norm(mat_to_rotvec(a @ b.T)))


finite = st.floats(-10.0, 10.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    position=st.tuples(st.floats(0.25, 0.75), st.floats(-0.35, 0.35), st.floats(0.02, 0.55)),
    delta=st.lists(finite, min_size=6, max_size=6),
)
def test_every_target_stays_in_the_box_and_the_per_step_limits(position, delta):
    config = arm_config()
    current = euler_to_mat(np.array([np.pi, 0.1, -0.2]))
    goal, rotation = ArmGuard(config).target(np.array(position), current, np.array(delta))
    assert config.workspace.contains(goal)
    assert np.linalg.norm(goal - np.array(position)) <= config.max_translation + 1e-9
    assert rotation_angle(rotation, current) <= config.max_rotation + 1e-6


@pytest.mark.parametrize("roll", [1e6, -1e6, 7.0])
def test_a_huge_rotation_step_is_saturated_not_wrapped(roll):
    """Converted first, a roll of 1e6 rad wrapped to an arbitrary rotation (1e6 mod 2 pi: -0.36 rad, the
    other way) before the per-step limit saw it; saturated first, it is a roll of max_rotation its own way."""
    config = arm_config(max_rotation_change=0.1)  # the step-to-step limit out of the way
    current = euler_to_mat(np.array([np.pi, 0.1, -0.2]))
    _, rotation = ArmGuard(config).target(np.array([0.5, 0.0, 0.3]), current, np.array([0, 0, 0, roll, 0, 0]))
    expected = euler_to_mat(np.array([np.sign(roll) * config.max_rotation, 0.0, 0.0])) @ current
    np.testing.assert_allclose(rotation, expected, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    action=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=7, max_size=7).filter(
        lambda a: not np.all(np.isfinite(a))
    )
)
def test_nan_and_inf_never_reach_the_arm(action):
    fake = FakeFranky()
    arm = FrankyArm(arm_config(), franky=fake)
    with pytest.raises(UnsafeCommand):
        arm.command(np.array(action))
    assert fake.moves() == [] and not any(c[0] in ("grasp", "open") for c in fake.calls)


def test_a_delta_becomes_the_absolute_cartesian_target():
    fake = FakeFranky()
    arm = FrankyArm(arm_config(max_translation_change=0.02, max_rotation_change=0.1), franky=fake)
    assert ("collision", ([20.0] * 7, [20.0] * 7, [20.0] * 6, [20.0] * 6)) in fake.calls
    assert arm.robot.relative_dynamics_factor == 0.1
    delta = np.array([0.01, -0.005, 0.002, 0.0, 0.0, 0.05, 0.0])
    arm.command(delta)
    (motion,) = fake.moves()
    np.testing.assert_allclose(motion.target.translation, [0.46, -0.005, 0.352])
    x, y, z, w = motion.target.quaternion
    current = quat_to_mat(np.array([0.0, 1.0, 0.0, 0.0]))  # the fake starts at franky xyzw [1, 0, 0, 0]
    np.testing.assert_allclose(quat_to_mat(np.array([w, x, y, z])), euler_to_mat(delta[3:6]) @ current, atol=1e-9)
    assert fake.calls[-1][2] is True  # asynchronous: the next step replaces the target
    # too far in one step: scaled to max_translation along the same direction, then clamped into the box
    arm.guard.reset()  # from rest: the step-to-step limit allows any step within the per-step one
    arm.command(np.array([0.0, 0.0, -1.0, 0, 0, 0, 0]))
    np.testing.assert_allclose(fake.moves()[-1].target.translation, [0.45, 0.0, 0.33])
    fake.pose["translation"] = np.array([0.45, 0.0, 0.03])
    arm.command(np.array([0.0, 0.0, -0.02, 0, 0, 0, 0]))
    np.testing.assert_allclose(fake.moves()[-1].target.translation, [0.45, 0.0, 0.02])


def test_the_state_is_relative_to_home_with_the_gripper_closedness():
    fake = FakeFranky()
    arm = FrankyArm(arm_config(), franky=fake)
    np.testing.assert_allclose(arm.state(), [0.45, 0.0, 0.35, 0.0, 0.0, 0.0, 0.0], atol=1e-6)
    fake.Gripper.width = 0.02
    assert arm.state()[6] == pytest.approx(0.75)


def test_gripper_hysteresis_does_not_chatter():
    h = GripperHysteresis(close_above=0.6, open_below=0.4)
    seq = [0.55, 0.65, 0.5, 0.45, 0.35, 0.5, 0.61, 0.59, 0.41]
    assert [h.update(c) for c in seq] == [False, True, True, True, False, False, True, True, True]
    fake = FakeFranky()
    arm = FrankyArm(arm_config(gripper={"min_hold_steps": 1}), franky=fake)
    for command in [0.3, 0.7, 0.55, 0.45, 0.8, 0.2, 0.5]:
        arm.command(np.r_[np.zeros(6), command])
    grips = [c[0] for c in fake.calls if c[0] in ("grasp", "open")]
    assert grips == ["grasp", "open"]  # only the two crossings: closed at 0.7, opened at 0.2


def test_a_gripper_flipping_every_step_changes_once_per_minimum_hold():
    """Hysteresis keeps 0.45/0.55 from chattering, not 0/1: the hold does (gripper.min_hold_steps, 10)."""
    fake = FakeFranky()
    arm = FrankyArm(arm_config(), franky=fake)
    for t in range(40):
        arm.command(np.r_[np.zeros(6), float(t % 2)])
    grips = [(len([c for c in fake.calls[:i] if c[0] == "move"]), c[0]) for i, c in enumerate(fake.calls)
             if c[0] in ("grasp", "open")]  # fmt: skip
    # the first 1 closes; each change then waits 10 commands and the next command asking the other way
    assert grips == [(2, "grasp"), (13, "open"), (24, "grasp"), (35, "open")]
    h = GripperHysteresis(min_hold=3)
    assert [h.update(c) for c in [1, 0, 0, 0, 1, 1]] == [True, True, True, False, False, False]
    h.reset()  # homing: open, and free to close at once
    assert h.update(1.0)


@settings(max_examples=100, deadline=None)
@given(
    start=st.tuples(st.floats(0.25, 0.75), st.floats(-0.35, 0.35), st.floats(0.02, 0.55)),
    deltas=st.lists(st.lists(st.floats(-1e6, 1e6), min_size=6, max_size=6), min_size=2, max_size=40),
)
def test_consecutive_steps_stay_in_the_box_and_the_step_to_step_limit(start, deltas):
    """With the arm reaching each target, every step also differs from the last by at most
    max_translation_change / max_rotation_change, walls included (the guard brakes before them)."""
    config = arm_config()
    guard = ArmGuard(config)
    position, rotation = np.array(start), euler_to_mat(np.array([np.pi, 0.0, 0.0]))
    last_step, last_rotvec = np.zeros(3), np.zeros(3)
    for delta in deltas:
        goal, goal_rotation = guard.target(position, rotation, np.array(delta))
        step, rotvec = goal - position, mat_to_rotvec(goal_rotation @ rotation.T)
        assert config.workspace.contains(goal)
        assert np.linalg.norm(step) <= config.max_translation + 1e-9
        assert np.linalg.norm(step - last_step) <= config.max_translation_change + 1e-9
        assert np.linalg.norm(rotvec - last_rotvec) <= config.max_rotation_change + 1e-6
        position, rotation, last_step, last_rotvec = goal, goal_rotation, step, rotvec


@settings(max_examples=100, deadline=None)
@given(
    outside=st.tuples(st.floats(-0.3, 0.3), st.floats(-0.3, 0.3), st.floats(-0.3, 0.3)),
    deltas=st.lists(st.lists(st.floats(-1e6, 1e6), min_size=6, max_size=6), min_size=1, max_size=30),
)
def test_an_arm_outside_the_box_goes_back_within_the_limits_never_in_one_jump(outside, deltas):
    """Moved out of the box by hand, or recovered after a reflex out there: every step keeps the per-step and
    step-to-step limits, and once inside, the arm stays inside."""
    config = arm_config()
    guard = ArmGuard(config)
    position = np.clip(np.array([0.5, 0.0, 0.3]) + np.array(outside), -1.0, 1.0)
    rotation, last_step, inside = np.eye(3), np.zeros(3), config.workspace.contains(position)
    for delta in deltas:
        goal, rotation = guard.target(position, rotation, np.array(delta))
        step = goal - position
        assert np.linalg.norm(step) <= config.max_translation + 1e-9
        assert np.linalg.norm(step - last_step) <= config.max_translation_change + 1e-9
        if inside:
            assert config.workspace.contains(goal)
        position, last_step, inside = goal, step, inside or config.workspace.contains(goal)


def test_a_command_that_fails_to_send_leaves_the_guard_and_gripper_as_they_were():
    franky = FakeFranky(reflex_at={1})
    arm = FrankyArm(arm_config(), franky=franky)
    arm.command(np.r_[0.02, 0, 0, 0, 0, 0, 1.0])  # a step of 0.01 m from rest; the gripper closes
    before = (arm.guard.last_step.copy(), arm.hysteresis.closed, arm.hysteresis.held)
    with pytest.raises(Reflex) as raised:
        arm.command(np.r_[0.02, 0, 0, 0, 0, 0, 0.0])
    assert (arm.guard.last_step.tolist(), arm.hysteresis.closed, arm.hysteresis.held) == (
        before[0].tolist(),
        before[1],
        before[2],
    )
    assert pickle.loads(pickle.dumps(raised.value)).arm == raised.value.arm == "right"  # crosses worker processes


def test_a_stop_from_another_thread_waits_for_the_send_under_way_and_the_next_step_starts_from_rest():
    sending, release = threading.Event(), threading.Event()
    franky = FakeFranky(follow=True)
    arm = FrankyArm(arm_config(), franky=franky)
    for _ in range(3):
        arm.command(np.r_[0.02, 0, 0, 0, 0, 0, 0])  # at full speed: 0.01 m a step
    real_move = arm.robot.move

    def slow_move(*args, **kwargs):
        sending.set()
        release.wait(5.0)
        return real_move(*args, **kwargs)

    arm.robot.move = slow_move
    commanding = threading.Thread(target=arm.command, args=(np.r_[0.02, 0, 0, 0, 0, 0, 0],))
    commanding.start()
    assert sending.wait(5.0)
    stopping = threading.Thread(target=arm.stop)  # the watchdog's thread
    stopping.start()
    time.sleep(0.01)
    assert stopping.is_alive()  # waits for the send under way ...
    release.set()
    commanding.join(5.0)
    stopping.join(5.0)
    kinds = [c[0] for c in franky.calls]
    assert kinds[-2:] == ["move", "stop"]  # ... which the stop then preempts: nothing is sent after it
    arm.robot.move = real_move
    x = franky.pose["translation"][0]
    arm.command(np.r_[0.02, 0, 0, 0, 0, 0, 0])
    assert franky.pose["translation"][0] - x == pytest.approx(arm.config.max_translation_change)  # from rest


def test_alternating_extremes_ramp_instead_of_reversing():
    config = arm_config()
    guard = ArmGuard(config)
    position, rotation = np.array([0.5, 0.0, 0.3]), np.eye(3)
    xs = []
    for t in range(8):
        goal, rotation = guard.target(position, rotation, np.array([(-1.0) ** t, 0, 0, 0, 0, 0]))
        xs.append(round(float(goal[0] - position[0]), 6))
        position = goal
    assert xs == [0.01, 0.0, 0.01, 0.0, 0.01, 0.0, 0.01, 0.0]  # +-1 m asked each step: 0.01 m of change at most
    guard.reset()
    goal, _ = guard.target(np.array([0.745, 0.0, 0.3]), np.eye(3), np.array([1.0, 0, 0, 0, 0, 0]))
    assert goal[0] == pytest.approx(0.75)  # 5 mm from the wall, from rest: it stops at the wall


def test_the_watchdog_stops_the_arm_when_commands_stop_coming():
    now = [0.0]
    stopped = threading.Event()
    with Watchdog(0.05, stopped.set, clock=lambda: now[0]) as dog:
        now[0] = 1.0
        time.sleep(0.05)
        assert not stopped.is_set()  # not armed before the first command (homing, setting the scene)
        dog.feed()
        now[0] = 1.04  # 0.04 s since the last command: in time
        time.sleep(0.05)
        assert not stopped.is_set()
        now[0] = 1.2
        assert stopped.wait(5.0)
        assert dog.expired
        dog.feed()
        assert not dog.expired
        dog.disarm()
        stopped.clear()
        now[0] = 5.0
        time.sleep(0.05)
        assert not stopped.is_set()  # disarmed: no stop while the operator scores


def test_a_refused_connection_is_one_clear_error_naming_the_host():
    with pytest.raises(HarmoWAMError, match="right arm at 127.0.0.1: libfranka: Connection to 127.0.0.1 refused$"):
        FrankyArm(arm_config(), franky=FakeFranky(refuse={"127.0.0.1"}))


def test_the_dry_run_prints_and_sends_nothing(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "franky", None)  # importing franky would fail: nothing may connect
    lines = []
    arm = DryRunArm(arm_config(), echo=lines.append)
    arm.command(np.array([0.01, 0, 0, 0, 0, 0, 1.0]))
    arm.stop()
    assert lines[0].startswith("[dry run] right -> position [0.46, 0.0, 0.35]") and lines[0].endswith("grasp")
    assert lines[-1] == "[dry run] right stop"
    np.testing.assert_allclose(arm.state()[:3], [0.46, 0.0, 0.35])


def test_station_configuration_loads_and_rejects_mistakes(tmp_path):
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(STATION))
    station = load_station_config(path)
    assert station.arms[0].host == "127.0.0.1" and station.cameras[0].serial == "123"
    with pytest.raises(StationConfigError, match="no station configuration"):
        load_station_config(tmp_path / "missing.yaml")
    bad = yaml.safe_load(yaml.safe_dump(STATION))
    bad["arms"][0]["home"]["position"] = [0.9, 0.0, 0.3]
    with pytest.raises(StationConfigError, match="outside the workspace"):
        station_config_from_data(bad)
    bad = yaml.safe_load(yaml.safe_dump(STATION))
    bad["arms"][0]["max_translation"] = 0.5
    with pytest.raises(StationConfigError, match="max_translation"):
        station_config_from_data(bad)
    bad = yaml.safe_load(yaml.safe_dump(STATION))
    bad["arms"][0]["speed"] = 1
    with pytest.raises(StationConfigError, match="unknown key"):
        station_config_from_data(bad)
    bad = yaml.safe_load(yaml.safe_dump(STATION))
    bad["cameras"][0]["role"] = "side"
    with pytest.raises(StationConfigError, match="role"):
        station_config_from_data(bad)


@pytest.mark.parametrize(
    "mutate, line",
    [
        # a wrong type, an unknown key and an out-of-range value each give one located line
        (lambda d: d["cameras"][0].update(width="wide"), "s.yaml: cameras[0].width: expected an integer, got 'wide'"),
        (
            lambda d: d["arms"][0]["gripper"].update(sped=1),
            "s.yaml: arms[0].gripper.sped: unknown key; expected one of",
        ),
        (lambda d: d.update(contrl_hz=20), "s.yaml: contrl_hz: unknown key; expected one of arms, cameras,"),
        (lambda d: d.update(watchdog_s=9), "s.yaml: watchdog_s: expected a number above 0 and at most 5.0, got 9"),
        (lambda d: d["arms"][0]["workspace"].update(min=[0, 0, float("nan")]), "workspace.min[2]: expected a finite"),
        (lambda d: d["arms"][0]["workspace"].update(min=[1, 1, 1]), "arms[0].workspace: expected every min below"),
        (lambda d: d["arms"][0]["gripper"].update(open_below=0.7), "arms[0].gripper: expected 0 <= open_below <"),
        (lambda d: d["arms"][0].pop("host"), "s.yaml: arms[0].host: missing; expected a string"),
        (lambda d: d.update(arms=d["arms"] * 3), "s.yaml: arms: expected one or two arms, got 3"),
        (lambda d: d["arms"][0].update(home=5), "s.yaml: arms[0].home: expected a mapping with keys position, euler"),
        (
            lambda d: d["arms"][0].update(max_translation_change=0.03),
            "s.yaml: arms[0].max_translation_change: expected at most max_translation (0.02), got 0.03",
        ),
        (
            lambda d: d["arms"][0].update(max_rotation_change=0),
            "arms[0].max_rotation_change: expected a number above 0",
        ),
        (
            lambda d: d["arms"][0].update(recovery_dynamics_factor=0.2),
            "arms[0].recovery_dynamics_factor: expected at most relative_dynamics_factor (0.1), got 0.2",
        ),
        (lambda d: d["arms"][0]["gripper"].update(min_hold_steps=0), "arms[0].gripper.min_hold_steps: expected a"),
    ],
)
def test_each_station_mistake_is_one_line_naming_file_and_key(mutate, line):
    bad = yaml.safe_load(yaml.safe_dump(STATION))
    bad["arms"][0]["gripper"] = {}
    mutate(bad)
    with pytest.raises(StationConfigError) as err:
        station_config_from_data(bad, "s.yaml")
    assert line in str(err.value) and "\n" not in str(err.value)


def test_two_arms_of_one_name_are_refused():
    data = yaml.safe_load(yaml.safe_dump(STATION))
    data["arms"].append(dict(data["arms"][0], host="127.0.0.2"))  # a reflex names its arm: names must differ
    with pytest.raises(StationConfigError, match="unique name for each arm"):
        station_config_from_data(data)


def test_station_defaults_and_coercions():
    data = yaml.safe_load(yaml.safe_dump(STATION))
    del data["arms"][0]["name"], data["arms"][0]["home"]["euler"]
    data["cameras"][0]["serial"] = 123456789012  # unquoted in YAML
    data["arms"][0]["gripper"] = None
    station = station_config_from_data(data)
    arm = station.arms[0]
    assert arm.name == "arm0" and arm.home_euler == [np.pi, 0.0, 0.0] and arm.home_position == [0.45, 0.0, 0.35]
    assert station.cameras[0].serial == "123456789012" and arm.gripper.close_above == 0.6
    # the step-to-step limits and the recovery dynamics default to half their per-step / normal values
    assert (arm.max_translation_change, arm.max_rotation_change, arm.recovery_dynamics_factor) == (0.01, 0.05, 0.05)
    assert arm.gripper.min_hold_steps == 10


def test_a_refused_connection_with_the_real_franky_names_the_host():
    pytest.importorskip("franky")  # the `real` extra; nothing listens on 127.0.0.1's FCI port here
    with pytest.raises(HarmoWAMError, match="cannot connect to the right arm at 127.0.0.1: libfranka"):
        FrankyArm(arm_config())
