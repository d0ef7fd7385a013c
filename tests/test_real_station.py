"""The real station behind the Env protocol, with fake `franky` and `pyrealsense2` (nothing reaches a robot):
single and dual arm commands, NaN stops every arm, the watchdog, generated policy outputs against every limit,
a reflex (stop, report, operator, recovery at reduced dynamics), Ctrl-C, operator scoring, the dry run, and
`harmowam deploy --backend real --dry-run` end to end."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import time

import numpy as np
import pytest
import yaml
from fakes import STATION, Cameras, FakeFranky, open_station, single_station
from real_limits import VIOLATIONS, audit, feed, policy_outputs
from rich.console import Console
from rich.prompt import Confirm
from typer.testing import CliRunner

from harmowam_cli.main import app
from harmowam_core.config import load_recipe
from harmowam_core.envs.real.config import station_config_from_data
from harmowam_core.envs.real.operator import OperatorTerminal
from harmowam_core.envs.real.safety import UnsafeCommand
from harmowam_core.envs.real.station import RealStation
from harmowam_core.errors import HarmoWAMError
from harmowam_core.evaluation.rollout import run_episode
from harmowam_core.evaluation.trace import read_trace


def dual_station(watchdog_s=0.25):
    data = yaml.safe_load(yaml.safe_dump(STATION))
    left = yaml.safe_load(yaml.safe_dump(STATION["arms"][0]))
    left.update(name="left", host="127.0.0.2")
    data["arms"] = [left, data["arms"][0]]
    data["cameras"] = [{"serial": s, "role": r, "width": 8, "height": 6} for s, r in
                       (("1", "global"), ("2", "wrist_left"), ("3", "wrist_right"))]  # fmt: skip
    data["watchdog_s"] = watchdog_s
    return station_config_from_data(data)


def test_dual_arm_actions_reach_each_arm_and_nan_stops_both():
    station, franky = open_station("flowers", dual_station(), answers=[True])
    with station:
        obs = station.reset()
        assert obs.state.shape == (14,) and set(obs.images) == {"global", "wrist_left", "wrist_right"}
        assert obs.images["global"].shape == (96, 96, 3)  # resized to the recipe's camera size
        action = np.zeros(14)
        action[0], action[7] = 0.01, -0.01  # left arm +x, right arm -x
        station.step(action)
        moves = [(c[3], c[1].target.translation) for c in franky.calls if c[0] == "move" and c[2]]
        assert [(host, round(float(t[0]), 4)) for host, t in moves] == [("127.0.0.2", 0.46), ("127.0.0.1", 0.44)]
        before = len(franky.moves())
        bad = np.zeros(14)
        bad[9] = np.nan
        with pytest.raises(UnsafeCommand):
            station.step(bad)
        assert len(franky.moves()) == before  # nothing of the bad action reached either arm
        assert {c[1] for c in franky.calls if c[0] == "stop"} == {"127.0.0.1", "127.0.0.2"}


def test_the_watchdog_stops_the_arms_when_steps_stop_coming():
    station, franky = open_station("stack_cans", single_station(watchdog_s=0.05), answers=[True])
    with station:
        station.reset()
        time.sleep(0.2)
        assert not any(c[0] == "stop" for c in franky.calls)  # not armed while no episode step has run
        station.step(np.zeros(7))
        deadline = time.monotonic() + 5
        while not any(c[0] == "stop" for c in franky.calls) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert any(c[0] == "stop" for c in franky.calls)


def test_generated_policy_outputs_never_send_a_command_outside_the_limits():
    """600 generated outputs (NaN, inf, huge, flickering gripper, alternating extremes, stuck, random) through
    the station, missing the watchdog's deadline every 150 and meeting two reflexes: every command the arm
    received lies in the box and the per-step and step-to-step limits; each stall stopped the arm.
    benchmarks/real_station_limits.py runs 10,000."""
    franky = FakeFranky(follow=True, reflex_at={50, 300})
    config = single_station(watchdog_s=0.2, control_hz=1000)
    station, franky = open_station("stack_cans", config, franky=franky, confirm=lambda q: True)
    with station:
        figures = feed(station, franky, policy_outputs(600, seed=3), stall_every=150)
    counts = audit(franky.calls, config.arms[0])
    assert {k: counts[k] for k in VIOLATIONS} == dict.fromkeys(VIOLATIONS, 0)
    refused = figures["outputs: nan"] + figures["outputs: inf"]
    assert refused > 0 and figures["outputs refused (NaN, inf)"] == refused
    assert counts["commands sent"] == 600 - refused - 2  # the two moves a reflex refused
    assert figures["stalls"] == figures["watchdog stops"] == 3 and figures["reflex stops"] == 2
    assert counts["gripper changes"] > 0 and {k for k in figures if k.startswith("outputs: ")} == {
        "outputs: random", "outputs: nan", "outputs: inf", "outputs: huge", "outputs: flickering gripper",
        "outputs: alternating extremes", "outputs: stuck",
    }  # fmt: skip


def test_a_reflex_stops_reports_and_goes_on_at_reduced_dynamics_once_the_operator_confirms():
    lines, questions = [], []

    def operator(question):
        questions.append(question)
        return True

    franky = FakeFranky(follow=True, reflex_at={2})
    station, franky = open_station("stack_cans", single_station(), franky=franky, confirm=operator, echo=lines.append)
    with station:
        station.reset()
        observations = [station.step(np.r_[0.01, 0, 0, 0, 0, 0, 0]) for _ in range(3)]  # the third: a reflex
        # the observation after a recovery says so (`run_episode` then has the actor plan afresh), once
        assert [o.info["recovered"] for o in observations] == [False, False, True]
        kinds = [c[0] for c in franky.calls]
        assert kinds[-3:] == ["reflex", "stop", "recover"]  # stopped before asking; nothing sent in between
        assert lines == [
            "reflex at step 3: the right arm at 127.0.0.1: libfranka: Move command aborted: motion aborted by "
            'reflex! ["cartesian_motion_generator_joint_acceleration_discontinuity"]; every arm stopped'
        ]
        assert questions[-1] == "recover the right arm at 127.0.0.1 and go on at relative dynamics factor 0.05?"
        assert station.arms[0].robot.relative_dynamics_factor == 0.05 and not station.operator_ended
        x = franky.pose["translation"][0]
        assert not station.step(np.r_[0.01, 0, 0, 0, 0, 0, 0]).info["recovered"]
        assert franky.calls[-1][0] == "move" and franky.pose["translation"][0] - x == pytest.approx(0.01)  # from rest
        assert station.reflexes == 1


def test_a_reflex_the_operator_does_not_confirm_ends_the_episode_and_sends_nothing():
    answers = [True, False]  # home: yes; recover: no
    franky = FakeFranky(reflex_at={0})
    station, franky = open_station("stack_cans", single_station(), franky=franky, confirm=lambda q: answers.pop(0))
    with station:
        station.reset()
        station.step(np.zeros(7))
        assert station.operator_ended and [c[0] for c in franky.calls[-2:]] == ["reflex", "stop"]
        assert station.arms[0].faulted and station.arms[0].robot.relative_dynamics_factor == 0.1
        with pytest.raises(HarmoWAMError, match="right arm is in an error state and was not recovered"):
            answers[:] = [True, False]  # the next episode: the scene is set, but the operator still says no
            station.reset()
        answers[:] = [True, True]
        station.reset()  # asked again, recovered, homed
        assert not station.arms[0].faulted and franky.calls[-3][0] == "recover"


def test_ctrl_c_stops_the_arm_during_a_step_and_between_steps(tmp_path):
    franky = FakeFranky()
    station, franky = open_station("stack_cans", single_station(), answers=[True, True, True], franky=franky)

    def interrupted_move(motion, asynchronous=False):
        raise KeyboardInterrupt

    with station:
        station.reset()
        station.arms[0].robot.move = interrupted_move
        with pytest.raises(KeyboardInterrupt):
            station.step(np.r_[0.01, 0, 0, 0, 0, 0, 0])
        assert franky.calls[-1] == ("stop", "127.0.0.1")
        del station.arms[0].robot.move

        class CtrlCAfter(EndAfter):
            def act(self, obs):
                self.count += 1
                if self.count == 3:
                    raise KeyboardInterrupt
                return np.r_[0.01, 0, 0, 0, 0, 0, 0]

        trace = tmp_path / "traces" / "episode_000.parquet"
        result = run_episode(station, CtrlCAfter(station, 0), seed=0, max_steps=50, trace=trace)
        assert result.interrupted and result.steps == 2
        calls = [c[0] for c in franky.calls]
        last_move = len(calls) - 1 - calls[::-1].index("move")
        assert calls[last_move - 1 : last_move + 2] == ["move", "move", "stop"]
        assert set(calls[last_move + 1 :]) == {"stop"}  # and the watchdog's, if its deadline passed meanwhile

        class FailsAfter(CtrlCAfter):
            def act(self, obs):
                if self.count == 1:
                    raise ValueError("a bug in the policy")
                return super().act(obs)

        with pytest.raises(ValueError, match="a bug"):  # the episode's own error, not the trace's
            run_episode(station, FailsAfter(station, 0), seed=0, max_steps=50, trace=tmp_path / "failed.parquet")
        assert read_trace(tmp_path / "failed.parquet").schema.metadata == {b"ended": b"failed", b"steps": b"1"}
    table = read_trace(trace)  # the steps before Ctrl-C, and how the episode ended
    assert table["frame_index"].to_pylist() == [0, 1]
    assert table.schema.metadata == {b"ended": b"interrupted", b"steps": b"2"}
    assert sorted(p.name for p in trace.parent.iterdir()) == ["episode_000.parquet"]  # no temporary file left


def test_the_operator_scores_stages_in_order():
    station, _ = open_station("stack_cans", single_station(), answers=[True, True, False, True, False])
    with station:
        station.reset()
        assert station.end_episode() == [True, False]
        station.reset()
        assert station.end_episode() == [False, False]  # a missed first stage ends the questions


class EndAfter:
    name = "gate"

    def __init__(self, env, steps):
        self.env, self.steps = env, steps

    def reset(self, env):
        self.count = 0

    def act(self, obs):
        self.count += 1
        if self.count == self.steps:
            self.env.terminal.type("\n")  # the operator presses Enter
            assert self.env.terminal.end_requested.wait(10)
        return np.zeros(7)

    def status(self):
        return "reactive", 0.2

    def imagined(self):
        return None

    def needs_images(self):
        return True


def test_an_episode_ends_when_the_operator_says_and_is_scored(tmp_path, terminal):
    station, _ = open_station("stack_cans", single_station(), answers=[True, True, True], terminal=terminal)
    with station:
        result = run_episode(
            station, EndAfter(station, 3), seed=0, max_steps=50, video=tmp_path / "e.mp4", trace=tmp_path / "e.parquet"
        )
    assert result.steps == 3 and result.stages == [True, True]
    table = read_trace(tmp_path / "e.parquet")
    assert table.schema.metadata == {b"ended": b"finished", b"steps": b"3"}
    trace = table.to_pydict()
    assert trace["frame_index"] == [0, 1, 2] and trace["expert"] == ["reactive"] * 3
    assert trace["stages"] == [[False, False]] * 3  # the operator scores them after the episode
    assert trace["gate.probability"] == pytest.approx([0.2] * 3)
    assert trace["transit_target"] == [None] * 3  # measured in the simulator only


def test_the_dry_run_connects_to_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "franky", None)
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)
    lines = []
    station = RealStation(
        load_recipe("stack_cans"), single_station(), dry_run=True, confirm=lambda q: True, echo=lines.append,
        watch_enter=False,
    )  # fmt: skip
    with station:
        obs = station.reset()
        obs = station.step(np.r_[0.01, 0, 0, 0, 0, 0, 1.0])
    assert obs.info["dry_run"] and obs.images["front"].shape == (96, 96, 3) and not obs.images["front"].any()
    assert any(line.startswith("[dry run] right -> position [0.46") for line in lines)


def test_deploy_on_the_real_station_dry_run_end_to_end(tmp_path, monkeypatch):
    from harmowam_core.policy.bundle import export_bundle, untrained_run

    monkeypatch.setitem(sys.modules, "franky", None)
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)
    run = untrained_run(tmp_path / "runs" / "stack_cans", load_recipe("stack_cans"), resolution=32)
    export_bundle(run, tmp_path / "bundles", name="b")
    station = tmp_path / "station.yaml"
    station.write_text(yaml.safe_dump(STATION))
    args = ["deploy", "--bundles", str(tmp_path / "bundles"), "--backend", "real", "--dry-run", "--station",
            str(station), "--max-steps", "2", "--out", str(tmp_path / "out")]  # fmt: skip
    out = CliRunner().invoke(app, args, input="y\ny\nn\n")  # home? stage 1 yes, stage 2 no
    assert out.exit_code == 0, out.output
    assert "[dry run] right -> position" in out.output
    episodes = yaml.safe_load((tmp_path / "out" / "episodes.json").read_text())
    assert episodes[0]["stages"] == [True, False] and episodes[0]["steps"] == 2
    out = CliRunner().invoke(app, ["deploy", "--bundles", str(tmp_path / "bundles"), "--dry-run"])
    assert out.exit_code == 2 and "--backend real only" in out.output
    out = CliRunner().invoke(app, args[:-4] + ["--station", str(tmp_path / "none.yaml")])
    assert out.exit_code == 2 and "no station configuration" in out.output


def test_doctor_reports_one_line_per_check_and_fails_when_the_arm_does_not_answer(tmp_path):
    station = tmp_path / "station.yaml"
    station.write_text(yaml.safe_dump(STATION))  # the arm's FCI host is 127.0.0.1: nothing listens there
    out = CliRunner().invoke(app, ["doctor", "--station", str(station)])
    assert out.exit_code == 1, out.output
    lines = out.output.strip().splitlines()
    assert any(line.startswith("FAIL arm right: 127.0.0.1:1337 does not answer") for line in lines)
    assert any("real-time kernel" in line for line in lines) and any("libusb" in line for line in lines)
    assert lines[-1].endswith("checks passed")
    out = CliRunner().invoke(app, ["doctor", "--station", str(tmp_path / "none.yaml")])
    assert out.exit_code == 2 and "no station configuration" in out.output


def test_deploy_to_an_unreachable_arm_is_one_line_naming_the_host(tmp_path):
    pytest.importorskip("franky")  # the real franky-control; 127.0.0.1 refuses the FCI connection
    from harmowam_core.policy.bundle import export_bundle, untrained_run

    run = untrained_run(tmp_path / "runs" / "stack_cans", load_recipe("stack_cans"), resolution=32)
    export_bundle(run, tmp_path / "bundles", name="b")
    data = yaml.safe_load(yaml.safe_dump(STATION))
    data["cameras"] = [{"serial": s, "role": r} for s, r in (("1", "front"), ("2", "top"), ("3", "wrist"))]
    station = tmp_path / "station.yaml"
    station.write_text(yaml.safe_dump(data))
    args = ["deploy", "--bundles", str(tmp_path / "bundles"), "--backend", "real", "--station", str(station)]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 2, out.output
    error = out.output.strip().splitlines()[-1]
    assert error.startswith("error: cannot connect to the right arm at 127.0.0.1: libfranka")


@contextlib.contextmanager
def pty_terminal(wrap=lambda stream: stream):
    """An OperatorTerminal on a pseudo-terminal (reading `wrap(stream)`): `type(text)` is the operator typing on the
    keyboard (b"\\x04" is Ctrl-D), `hang_up()` closes the terminal."""
    master, slave = os.openpty()
    stream = os.fdopen(slave, "r")
    open_ = [True]

    def hang_up():
        if open_[0]:
            open_[0] = False
            os.close(master)

    term = OperatorTerminal(wrap(stream))
    term.type = lambda text: os.write(master, text.encode())
    term.hang_up = hang_up
    try:
        yield term
    finally:
        hang_up()  # first: closing the stream waits for the reader's pending read
        stream.close()


@pytest.fixture
def terminal():
    with pty_terminal() as term:
        yield term


def within(fn, timeout=10.0):
    """fn() in a thread; its result, or a test failure (never a hang) after `timeout` seconds."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            out["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still blocked after {timeout} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def answered_when_asked(terminal, answers):
    """A thread typing each of `answers` when a question waits for it; `.check()` fails if it did not."""
    done = []

    def operator():
        for answer in answers:
            read = terminal.lines_read
            wait_until(lambda: terminal.reading)
            terminal.type(answer + "\n")
            wait_until(lambda read=read: terminal.lines_read > read)
        done.append(True)

    thread = threading.Thread(target=operator, daemon=True)
    thread.start()

    def check():
        thread.join(10)
        assert done, "the operator was never asked all the questions"

    thread.check = check
    return thread


def ask(terminal, question="recover?"):
    """A question asked as deploy asks it (rich, through the terminal's one reader)."""
    with terminal.asking():
        return Confirm.ask(question, console=Console(file=io.StringIO()), stream=terminal)


def test_a_line_typed_during_a_question_answers_it_and_any_other_line_ends_the_episode(terminal):
    operator = answered_when_asked(terminal, ["maybe", "y"])  # an invalid answer, then a valid one: rich asks again
    assert within(lambda: ask(terminal)) is True
    operator.check()
    assert not terminal.end_requested.is_set()
    terminal.type("\n")  # no question: the operator ends the episode
    assert terminal.end_requested.wait(10)


def test_lines_left_over_from_a_question_never_answer_the_next_one(terminal):
    def pasted():
        wait_until(lambda: terminal.reading)
        terminal.type("y\ny\n")  # two answers at once (a paste, a key held down)

    threading.Thread(target=pasted, daemon=True).start()
    assert within(lambda: ask(terminal)) is True
    operator = answered_when_asked(terminal, ["n"])  # the next question waits for its own answer
    assert within(lambda: ask(terminal, "send the arms home?")) is False
    operator.check()


class SlowReader:
    """A terminal stream whose reader falls behind (a loaded machine): every line after the first is read from the
    terminal `delay` seconds after the reader asks for it."""

    def __init__(self, stream, delay=0.3):
        self.stream, self.delay, self.lines = stream, delay, 0

    def readline(self):
        if self.lines:
            time.sleep(self.delay)
        self.lines += 1
        return self.stream.readline()

    def fileno(self):
        return self.stream.fileno()

    def isatty(self):
        return self.stream.isatty()


class LateReader(SlowReader):
    """A terminal stream whose reader is held up after a line has left the terminal and before it is handed over
    (a thread descheduled on a loaded machine): every line after the first is returned `delay` seconds after it
    was read."""

    def readline(self):
        line = self.stream.readline()
        if self.lines:
            time.sleep(self.delay)
        self.lines += 1
        return line


@pytest.mark.parametrize("reader", [SlowReader, LateReader], ids=["not read yet", "read, not handed over"])
def test_a_pasted_line_the_reader_has_not_read_yet_neither_answers_nor_ends_anything(reader):
    with pty_terminal(reader) as terminal:

        def pasted():
            wait_until(lambda: terminal.reading)
            terminal.type("y\ny\n")

        threading.Thread(target=pasted, daemon=True).start()
        assert within(lambda: ask(terminal)) is True  # the second "y" is still in the terminal when this returns
        assert not terminal.end_requested.is_set()  # dropped when the question ended, not taken for Enter
        operator = answered_when_asked(terminal, ["n"])
        assert within(lambda: ask(terminal, "send the arms home?")) is False
        operator.check()
        assert not terminal.end_requested.is_set()


def test_text_without_its_newline_holds_up_no_question(terminal):
    terminal.type("ab\x04")  # typed during an episode, sent with Ctrl-D: the reader waits for the rest of the line
    operator = answered_when_asked(terminal, ["y", "y"])  # "aby" completes that line (rich asks again), then "y"
    assert within(lambda: ask(terminal)) is True
    operator.check()


class NoDescriptor:
    """A terminal stream without a file descriptor (a test double of a stream): read without watching one."""

    def __init__(self, stream):
        self.stream = stream

    def readline(self):
        return self.stream.readline()

    def isatty(self):
        return self.stream.isatty()


def test_a_stream_without_a_descriptor_answers_questions_and_ends_episodes():
    with pty_terminal(NoDescriptor) as terminal:
        operator = answered_when_asked(terminal, ["n"])
        assert within(lambda: ask(terminal)) is False
        operator.check()
        assert not terminal.end_requested.is_set()
        terminal.type("\n")
        assert terminal.end_requested.wait(10)


def test_ctrl_d_answers_no_question_and_otherwise_ends_the_episode(terminal):
    terminal.type("\x04")  # Ctrl-D during an episode: the same as Enter
    assert terminal.end_requested.wait(10)
    terminal.end_requested.clear()

    def ctrl_d():
        wait_until(lambda: terminal.reading)
        terminal.type("\x04")

    threading.Thread(target=ctrl_d, daemon=True).start()
    with pytest.raises(EOFError):
        within(lambda: ask(terminal))
    operator = answered_when_asked(terminal, ["y"])  # the terminal still reads
    assert within(lambda: ask(terminal)) is True
    operator.check()
    assert not terminal.closed and not terminal.end_requested.is_set()


def test_the_answer_to_the_reflex_question_recovers_the_arm_and_does_not_end_the_episode(terminal, capsys):
    franky = FakeFranky(follow=True, reflex_at={2})
    station = RealStation(
        load_recipe("stack_cans"), single_station(), franky=franky, rs=Cameras().rs, echo=lambda line: None,
        terminal=terminal,
    )  # fmt: skip
    with station:  # the default operator: y/n on the terminal, read through its one reader
        terminal.type("\n")  # Enter before the episode begins ends nothing
        wait_until(terminal.end_requested.is_set)
        operator = answered_when_asked(terminal, ["y", "yes"])  # send the arms home; recover after the reflex
        within(station.reset)
        assert not terminal.end_requested.is_set()
        observations = [within(lambda: station.step(np.r_[0.01, 0, 0, 0, 0, 0, 0])) for _ in range(3)]
        operator.check()  # the third step met a reflex and asked
        assert observations[-1].info["recovered"] and not station.operator_ended
        assert station.arms[0].robot.relative_dynamics_factor == 0.05
        assert "recover the right arm at 127.0.0.1" in capsys.readouterr().out
        terminal.type("\n")  # Enter during the episode ends it at the next step
        assert terminal.end_requested.wait(10)
        station.step(np.zeros(7))
        assert station.operator_ended


def test_a_terminal_closed_before_an_answer_is_one_line(terminal):
    station = RealStation(
        load_recipe("stack_cans"), single_station(), franky=FakeFranky(), rs=Cameras().rs, echo=lambda line: None,
        terminal=terminal,
    )  # fmt: skip
    with station:
        terminal.hang_up()
        with pytest.raises(HarmoWAMError, match="no answer to 'set the scene for 'stack_cans'.*was closed"):
            within(station.reset)
        assert terminal.closed


def test_without_a_terminal_on_stdin_nothing_reads_it():
    from harmowam_core.envs.real.operator import stdin_taken, stdin_terminal

    assert not sys.stdin.isatty() and stdin_terminal() is None and not stdin_taken()  # pytest's stdin: no reader
