"""`harmowam reproduce`: a stub-sized run goes end to end and writes report.md; a phase killed midway runs again
on the next run while the finished ones are skipped; a re-run skips every finished phase and rewrites nothing;
changed settings are refused in one line; --restart-from redoes a phase. The phase bookkeeping itself
(`run_phases`) is tested on stand-in phases."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from harmowam_cli import eval_cmd
from harmowam_cli.main import app
from harmowam_core import collect as collect_module
from harmowam_core.collect import ScriptedRecorder
from harmowam_core.config import load_recipe
from harmowam_core.errors import HarmoWAMError
from harmowam_core.pipeline import STATE_FILE, Phase, PipelinePlan, PipelineState, pipeline_phases, run_phases

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

    def __init__(self, recipe, spec, staging_root, ood, keep_failures, detour=0.0):
        super().__init__(recipe, spec, staging_root, ood, True, detour)


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
    assert "between its top and 3 cm above it" in report
    assert "interaction covers everything from the pre-grasp pose to the end of S1: grasp the second can, " in report


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
    assert bad.exit_code == 2 and "--restart-from: takes one of collect, label" in bad.output


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
    from harmowam_core.pipeline import check_out_dir

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


def test_demo_step_counts_are_the_stages_schedules_not_just_a_stop():
    """`demo --wm-steps 50`: the recipe's train_wm.steps becomes 50 (the cosine ends there; `--max-steps` alone
    would stop a 2000-step schedule at 50); a count above the recipe's keeps the recipe's."""
    plan = PipelinePlan("stack_cans", Path("unused"), wm_steps=50, experts_steps=10**9, budget_minutes=10)
    recipe = plan.recipe()
    wm, experts = plan.training_overrides(recipe)
    assert load_recipe("stack_cans", wm).train_wm.steps == 50 and "train_wm.max_minutes" in wm[-1]
    assert load_recipe("stack_cans", experts).train_experts.steps == recipe.train_experts.steps
    plain = PipelinePlan("stack_cans", Path("unused"))
    assert plain.training_overrides(plain.recipe()) == ([], [])


@pytest.mark.parametrize(
    ("args", "wm", "experts"),
    [([], 1000, 1500), (["--set", "train_experts.steps=4500"], 1000, 4500), (["--experts-steps", "300"], 1000, 300)],
)
def test_demo_trains_its_own_steps_unless_set_or_an_option_says_otherwise(tmp_path, monkeypatch, args, wm, experts):
    """`demo --set train_experts.steps=4500` trains 4500 expert steps (the demo's 1500 would otherwise cap it)."""
    from harmowam_cli import _pipeline

    plans = []

    def stop(plan, state):
        plans.append(plan)
        raise HarmoWAMError("stopped before any work")

    monkeypatch.setattr(_pipeline, "run_pipeline", stop)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), *args])
    assert result.exit_code == 2 and "stopped before any work" in result.output
    recipe = plans[0].recipe()
    assert plans[0].planned_steps(recipe) == (wm, experts)


class StandInRunners:
    """`Runners` that do no work: collection appends episode rows (at most `stop_after` of them, as a collection
    ended by Ctrl-C or SIGTERM returns normally with the episodes kept so far); the others record their calls."""

    def __init__(self, stop_after: int | None = None):
        self.calls: list[tuple] = []
        self.stop_after = stop_after

    def collect(self, task, episodes, data, overrides, workers):
        import pyarrow.parquet as pq

        from harmowam_core.data import format as fmt
        from harmowam_core.data.meta import episodes_table, read_episode_rows

        self.calls.append(("collect", episodes))
        rows = read_episode_rows(data)
        kept = episodes if self.stop_after is None else min(episodes, self.stop_after)
        rows += [{"episode_index": len(rows) + i, "seed": len(rows) + i, "ood": "none"} for i in range(kept)]
        path = data / fmt.EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(episodes_table(rows), path)
        return SimpleNamespace(saved=kept, interrupted=kept < episodes)

    def label(self, data, task, overrides):
        self.calls.append(("label",))

    def train_wm(self, task, data, out, resume, max_steps, overrides):
        self.calls.append(("train-wm", resume))
        return SimpleNamespace(steps=2, model_dir=out / "model", evaluation=None)

    def train_experts(self, task, data, wm, out, resume, max_steps, overrides):
        self.calls.append(("train-experts", resume))
        return SimpleNamespace(steps=2, model_dir=out / "model", report=None)

    def export(self, runs, bundles, name):
        self.calls.append(("export",))
        return bundles / (name or "bundle")

    def eval(self, bundle, plan, out):
        self.calls.append(("eval",))
        return SimpleNamespace(seconds=1.0), {"json": out / "results.json"}

    def interaction(self, bundle, plan, out):
        raise AssertionError("the plans here measure no interaction episodes")

    def note(self, message):
        self.calls.append(("note", message))


def stand_in_plan(out, overrides=()) -> PipelinePlan:
    return PipelinePlan("stack_cans", out, episodes=3, overrides=list(overrides), interaction=False)


def test_an_interrupted_collection_stays_unfinished_and_the_next_run_continues_it(tmp_path):
    plan = stand_in_plan(tmp_path)
    stopped = StandInRunners(stop_after=2)
    with pytest.raises(KeyboardInterrupt):  # as `harmowam reproduce` / `demo` stop on Ctrl-C: exit code 130
        run_phases(pipeline_phases(plan, stopped), PipelineState(plan.state_path))
    assert [c[0] for c in stopped.calls] == ["collect", "note"]  # nothing labelled or trained on 2 of 3 episodes
    assert "collection stopped at 2 of 3 episodes" in stopped.calls[1][1]
    phases = json.loads(plan.state_path.read_text())["phases"]
    assert list(phases) == ["collect"] and phases["collect"]["status"] == "running"

    resumed = StandInRunners()
    run_phases(pipeline_phases(plan, resumed), PipelineState.open(plan.state_path))
    assert resumed.calls[:2] == [("note", "resuming: 2 of 3 episodes were collected before"), ("collect", 1)]
    assert ("label",) in resumed.calls
    collect = json.loads(plan.state_path.read_text())["phases"]["collect"]
    assert collect["status"] == "done" and collect["attempts"] == 2
    assert collect["result"] == {"episodes": 3, "seeds": [0, 1, 2]}


def test_an_experts_setting_redoes_the_experts_and_leaves_the_world_model_finished(tmp_path):
    plan = stand_in_plan(tmp_path)
    recipe = plan.recipe()
    run_phases(pipeline_phases(plan, StandInRunners()), PipelineState(plan.state_path))
    other = "delta" if recipe.model_config.action_targets == "absolute" else "absolute"
    changed = stand_in_plan(tmp_path, [f"model.overrides.action_targets={other}"])
    settings = {p.name: p.settings for p in pipeline_phases(changed, StandInRunners())}
    assert set(settings["train-wm"]["model"]) == {"preset", "world_model"}
    assert "world_model" not in settings["train-experts"]["model"]
    assert settings["train-experts"]["model"]["action_targets"] == other

    with pytest.raises(HarmoWAMError, match=r"phase train-experts changed since it ran \(model\.action_targets: "):
        run_phases(pipeline_phases(changed, StandInRunners()), PipelineState.open(plan.state_path))
    runners = StandInRunners()
    run_phases(pipeline_phases(changed, runners), PipelineState.open(plan.state_path), restart_from="train-experts")
    assert [c[0] for c in runners.calls] == ["train-experts", "export", "eval"]  # the world model is kept

    wm_changed = stand_in_plan(tmp_path, ["model.overrides.world_model.denoising_steps=1"])
    with pytest.raises(HarmoWAMError, match=r"phase train-wm changed since it ran \(model\.world_model\.denoising"):
        run_phases(pipeline_phases(wm_changed, StandInRunners()), PipelineState.open(plan.state_path))


def test_an_existing_dataset_is_used_extended_and_never_removed(tmp_path):
    """`reproduce --data DIR`: a dataset holding enough episodes is not collected into; one holding fewer gets only
    the missing ones; redoing the collect phase (--restart-from collect) keeps it; a missing one is one line."""
    data = tmp_path / "mine"
    StandInRunners().collect("stack_cans", 2, data, [], None)  # the user's dataset: 2 episodes
    (data / "meta" / "info.json").write_text("{}")
    (data / "keep.txt").write_text("the user's")
    plan = PipelinePlan("stack_cans", tmp_path / "out", episodes=3, interaction=False, data_dir=data,
                        existing_data=True)  # fmt: skip
    runners = StandInRunners()
    run_phases(pipeline_phases(plan, runners), PipelineState(plan.state_path))
    assert runners.calls[:2] == [("note", f"{data} holds 2 episodes: collecting 1 more into it"), ("collect", 1)]
    collect = json.loads(plan.state_path.read_text())["phases"]["collect"]
    assert collect["result"]["episodes"] == 3 and collect["settings"]["data"] == str(data.resolve())

    again = StandInRunners()
    run_phases(pipeline_phases(plan, again), PipelineState.open(plan.state_path), restart_from="collect")
    assert (data / "keep.txt").read_text() == "the user's"  # never removed, not even when the phase is redone
    assert ("collect", 1) not in again.calls and ("label",) in again.calls

    with pytest.raises(HarmoWAMError, match="no dataset there"):
        PipelinePlan("stack_cans", tmp_path / "o2", data_dir=tmp_path / "none", existing_data=True).check()
