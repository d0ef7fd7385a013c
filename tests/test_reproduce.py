"""`harmowam reproduce`: a stub-sized run goes end to end and writes report.md; a phase killed midway runs again
on the next run while the finished ones are skipped; a re-run skips every finished phase and rewrites nothing;
changed settings are refused in one line; --restart-from redoes a phase. The phase bookkeeping itself
(`run_phases`) is tested on stand-in phases."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from harmowam_cli import eval_cmd
from harmowam_cli.main import app
from harmowam_core import collect as collect_module
from harmowam_core.collect import ScriptedRecorder
from harmowam_core.errors import HarmoWAMError
from harmowam_core.reproduce import STATE_FILE, Phase, PipelinePlan, PipelineState, run_phases

runner = CliRunner()
STUB = [  # seconds, not hours: tiny episodes, images and training
    "max_episode_steps=20",
    "model.overrides.world_model.denoising_steps=1",
    *[f"cameras.{i}.{dim}=16" for i in range(3) for dim in ("height", "width")],
    "train_wm.steps=2",
    "train_experts.steps=2",
    "train_wm.batch_size=2",
    "train_experts.batch_size=2",
    "train_wm.held_out_episodes=1",
    "train_experts.held_out_episodes=1",
]


class ShortRecorder(ScriptedRecorder):
    """The scripted recorder keeping its episodes although the stub's step limit ends them before any stage
    (collection insists on successful demonstrations, which take ~250 steps)."""

    def __init__(self, recipe, spec, staging_root, ood, keep_failures):
        super().__init__(recipe, spec, staging_root, ood, True)


def reproduce(out, *extra):
    args = ["reproduce", "stack_cans", "--out", str(out), "--episodes", "3", "--workers", "1", "--eval-episodes", "1",
            "--max-steps", "3", "--budget-minutes", "30", *[a for s in STUB for a in ("--set", s)], *extra]  # fmt: skip
    return runner.invoke(app, args)


def artifacts(out) -> dict[str, float]:
    """Modification times of everything the phases wrote (not the state and report, rewritten at each run)."""
    return {
        str(p.relative_to(out)): p.stat().st_mtime_ns
        for p in out.rglob("*")
        if p.is_file() and p.name not in (STATE_FILE, "report.md")
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same command run: with the eval phase killed, then again, then once more; plus refused variants."""
    out = tmp_path_factory.mktemp("reproduce") / "stack_cans"
    seen = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(collect_module, "RECORDER", "test_reproduce:ShortRecorder")

        def killed(*args, **kwargs):
            raise KeyboardInterrupt  # as Ctrl-C or the end of a session would stop the evaluation

        with pytest.MonkeyPatch.context() as kill:
            kill.setattr(eval_cmd, "run_eval", killed)
            seen["killed"] = reproduce(out)
        seen["killed_state"] = json.loads((out / STATE_FILE).read_text())
        seen["resumed"] = reproduce(out)
        seen["resumed_state"] = json.loads((out / STATE_FILE).read_text())
        seen["artifacts"] = artifacts(out)
        seen["again"] = reproduce(out)
        seen["artifacts_again"] = artifacts(out)
        seen["changed"] = reproduce(out, "--episodes", "4")
        seen["bad_phase"] = reproduce(out, "--restart-from", "training")
        seen["restarted"] = reproduce(out, "--restart-from", "interaction")
        seen["artifacts_restarted"] = artifacts(out)
    seen["out"] = out
    return seen


@pytest.mark.sim
def test_a_killed_phase_leaves_the_finished_ones_recorded(runs):
    assert runs["killed"].exit_code == 130, runs["killed"].output
    phases = runs["killed_state"]["phases"]
    assert [n for n, r in phases.items() if r["status"] == "done"] == [
        "collect", "label", "train-wm", "train-experts", "export"
    ]  # fmt: skip
    assert phases["eval"]["status"] == "running" and "interaction" not in phases


@pytest.mark.sim
def test_the_next_run_skips_the_finished_phases_and_redoes_the_killed_one(runs):
    result = runs["resumed"]
    assert result.exit_code == 0, result.output
    for name in ("collect", "label", "train-wm", "train-experts", "export"):
        assert f"{name}: finished before" in result.output
    assert "6/7 eval" in result.output and "7/7 interaction" in result.output
    phases = runs["resumed_state"]["phases"]
    assert all(r["status"] == "done" for r in phases.values()) and len(phases) == 7
    assert phases["eval"]["attempts"] == 1  # started over, not resumed
    assert phases["collect"]["result"]["episodes"] == 3 and phases["collect"]["result"]["seeds"] == [0, 1, 2]
    # --budget-minutes 30 split in proportion to the steps (2 and 2): 15 minutes each, recorded as settings
    assert phases["train-wm"]["settings"]["train_wm"]["max_minutes"] == 15.0
    assert phases["train-experts"]["settings"]["train_experts"]["max_minutes"] == 15.0
    assert phases["train-wm"]["result"]["steps"] == 2


@pytest.mark.sim
def test_the_report_has_the_tables_times_and_plot(runs):
    report = (runs["out"] / "report.md").read_text()
    for heading in ("## Phases", "## World model (held out)", "## Experts (held out)", "## Stage-wise success",
                    "## Transit and interaction (paper Table 1 form, appendix D.2)"):  # fmt: skip
        assert heading in report
    assert "![stage-wise success](eval/success.png)" in report and (runs["out"] / "eval" / "success.png").is_file()
    assert "| gate | position | 1 | 1000 |" in report and "| scripted (upper bound) | in-domain |" in report
    assert "| predictive (joint modeling) | in-domain | 0/1 |" in report  # 3 steps: no transit, no handover
    assert "| collect |" in report and "3 episodes, scene seeds 0-2" in report


@pytest.mark.sim
def test_a_rerun_skips_every_phase_and_rewrites_nothing(runs):
    result = runs["again"]
    assert result.exit_code == 0, result.output
    assert result.output.count("finished before") == 7 and "1/7 collect ·" not in result.output
    assert runs["artifacts_again"] == runs["artifacts"]


@pytest.mark.sim
def test_changed_settings_and_an_unknown_phase_are_one_line_each(runs):
    changed = runs["changed"]
    assert changed.exit_code == 2
    line = changed.output.strip()
    assert "\n" not in line and "phase collect changed" in line and "episodes: 3 -> 4" in line
    assert "--restart-from collect" in line
    bad = runs["bad_phase"]
    assert bad.exit_code == 2 and "--restart-from takes one of collect, label" in bad.output


@pytest.mark.sim
def test_restart_from_redoes_that_phase_only(runs):
    result = runs["restarted"]
    assert result.exit_code == 0, result.output
    assert result.output.count("finished before") == 6 and "7/7 interaction" in result.output
    before, after = runs["artifacts_again"], runs["artifacts_restarted"]
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed and all(k.startswith("interaction/") for k in changed)


# ----------------------------------------------------------------------------------------------- bookkeeping
def stand_in(name: str, log: list, settings: dict | None = None, fail: bool = False, resumable: bool = False):
    def run(resume: bool, results: dict) -> dict:
        log.append((name, resume))
        if fail:
            raise RuntimeError("killed")
        return {"after": sorted(results)}

    return Phase(name, name, settings or {}, run, clean=lambda: log.append((name, "clean")), resumable=resumable)


def test_run_phases_resumes_a_resumable_phase_and_cleans_one_started_over(tmp_path):
    state, log = PipelineState(tmp_path / STATE_FILE), []
    phases = [stand_in("a", log), stand_in("b", log, fail=True, resumable=True), stand_in("c", log)]
    with pytest.raises(RuntimeError):
        run_phases(phases, state)
    assert log == [("a", "clean"), ("a", False), ("b", "clean"), ("b", False)]
    log.clear()
    phases[1] = stand_in("b", log, resumable=True)
    results = run_phases(phases, PipelineState.open(tmp_path / STATE_FILE))
    assert log == [("b", True), ("c", "clean"), ("c", False)]  # a skipped, b continued, c started
    assert results["c"] == {"after": ["a", "b"]}
    assert json.loads((tmp_path / STATE_FILE).read_text())["phases"]["b"]["attempts"] == 2


def test_run_phases_refuses_changed_settings_unless_restarted_there(tmp_path):
    log = []
    run_phases([stand_in("a", log, {"n": 1}), stand_in("b", log, {"k": [1, 2]})], PipelineState(tmp_path / "s.json"))
    changed = [stand_in("a", log, {"n": 1}), stand_in("b", log, {"k": [1, 3]})]
    with pytest.raises(HarmoWAMError, match=r"phase b changed since it ran \(k: \[1, 2\] -> \[1, 3\]\)"):
        run_phases(changed, PipelineState.open(tmp_path / "s.json"))
    log.clear()
    run_phases(changed, PipelineState.open(tmp_path / "s.json"), restart_from="b")
    assert log == [("b", "clean"), ("b", False)]


def test_a_broken_state_file_and_a_foreign_out_dir_are_refused(tmp_path):
    from harmowam_core.reproduce import check_out_dir

    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(HarmoWAMError, match="not a reproduce state file"):
        PipelineState.open(tmp_path / STATE_FILE)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(HarmoWAMError, match="holds files but no reproduce.json"):
        check_out_dir(PipelinePlan("stack_cans", other))


def test_the_budget_is_split_in_proportion_to_the_steps():
    plan = PipelinePlan.reproduce("stack_cans", budget_minutes=60, overrides=["train_wm.steps=3000"])
    recipe = plan.recipe()
    wm, experts = plan.budget_split(recipe)
    assert wm == pytest.approx(60 * 3000 / (3000 + recipe.train_experts.steps)) and wm + experts == pytest.approx(60)
    assert plan.out.as_posix() == "reproduce/stack_cans" and plan.bundle_name == "stack_cans"
    full = PipelinePlan.reproduce("stack_cans", full=True)
    assert full.protocols == ["none", "background", "position", "objects"] and "keyframe-average" in full.routers
