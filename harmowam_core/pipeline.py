"""The pipeline of `harmowam reproduce TASK` and `harmowam demo`: the simulator version of the paper's protocol, end to
end, resumable phase by phase.

    plan = PipelinePlan.reproduce("stack_cans", Path("reproduce/stack_cans"), budget_minutes=60)
    phases = pipeline_phases(plan, runners)     # what each phase runs, and the settings that define it
    run_phases(phases, PipelineState.open(plan.state_path), on_start=..., on_skip=...)
    write_report(plan, state)                   # report.md

Phases: collect (scripted demonstrations), label, train-wm, train-experts, export, eval (stage-wise success of
routers x OOD protocols and the scripted expert's upper bound, paper Tables 5-8), interaction (the appendix
D.2 handover episodes of the predictive and reactive experts, for Table 1; `phase_split`). `harmowam demo`
runs the same phases, small and without the interaction episodes. The work of each phase is done by a
`Runners` object: the command line's (`harmowam_cli._pipeline`) calls the commands' own functions, with their
progress bars.

Resumability. `reproduce.json` in the output directory records, per phase, the settings that define its
result (counts, seeds, the recipe sections it reads; not the worker count, which changes nothing) and whether
it finished; it is written atomically at each change. A re-run skips finished phases whose settings are
unchanged and refuses, in one line, a finished phase whose settings changed (pass a new --out, or
--restart-from PHASE to redo it and every phase after it). A phase that did not finish (killed, interrupted,
failed) runs again, and every phase after it: collection continues with the episodes still missing, training
resumes from its last checkpoint (`--resume`), the others start over. A collection that stops short of its
episodes (Ctrl-C or SIGTERM end it with the episodes kept so far) counts as interrupted: nothing after it runs
on a partial dataset. The training phases record the part of the model configuration each one reads: train-wm
the world model's, train-experts the rest (experts, gate, action chunk and targets), so a setting of the
experts redoes the experts only.

`--budget-minutes M` caps the two training loops' wall-clock time (`TrainSpec.max_minutes`), split in
proportion to their step counts; the world-model cache, the decoding and the held-out evaluations come on top.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harmowam_core.config import Recipe, load_recipe
from harmowam_core.envs.ood import OOD_KINDS
from harmowam_core.errors import HarmoWAMError, ParameterError
from harmowam_core.policy.routers import ROUTERS
from harmowam_core.seeds import seed_ranges

PHASES = ("collect", "label", "train-wm", "train-experts", "export", "eval", "interaction")
STATE_FILE = "reproduce.json"
REPORT_FILE = "report.md"
STATE_VERSION = 1
PAPER_PROTOCOLS = ["none", "position"]  # the default evaluation: in-domain and position OOD
PAPER_ROUTERS = ["gate", "predictive", "reactive"]
FULL_ROUTERS = list(ROUTERS)  # every router: paper Fig. 5
EVAL_SEED = 1000  # evaluation scenes: seeds 1000.. (collection takes 0..)


# ----------------------------------------------------------------------------------------------- the state
class PipelineState:
    """Per-phase records (status, settings, seconds, result) in a JSON file written atomically; `path` None
    keeps them in memory only (`harmowam demo`)."""

    def __init__(self, path: Path | None, data: dict | None = None):
        self.path = path
        self.data = data or {"version": STATE_VERSION, "phases": {}}

    @classmethod
    def open(cls, path: Path) -> PipelineState:
        if not path.is_file():
            return cls(path)
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("phases"), dict):
                raise ValueError("no phases")
        except (OSError, ValueError) as err:
            raise HarmoWAMError(
                f"{path}: not a reproduce state file ({type(err).__name__}); pass a new --out"
            ) from None
        return cls(path, data)

    @property
    def phases(self) -> dict[str, dict]:
        return self.data["phases"]

    def get(self, name: str) -> dict | None:
        return self.phases.get(name)

    def done(self, name: str) -> bool:
        record = self.get(name)
        return record is not None and record.get("status") == "done"

    def start(self, name: str, settings: dict, resumed: bool) -> None:
        before = self.get(name) or {}
        self.phases[name] = {
            "status": "running",
            "settings": settings,
            "seconds": before.get("seconds", 0.0) if resumed else 0.0,  # a resumed phase's earlier attempts count
            "attempts": before.get("attempts", 0) + 1 if resumed else 1,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.save()

    def add_seconds(self, name: str, seconds: float) -> None:
        self.phases[name]["seconds"] = self.phases[name].get("seconds", 0.0) + seconds
        self.save()

    def finish(self, name: str, result: dict) -> None:
        self.phases[name].update(status="done", result=result, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.save()

    def forget(self, name: str) -> None:
        if self.phases.pop(name, None) is not None:
            self.save()

    def save(self) -> None:
        if self.path is None:
            return
        from harmowam_core.data.meta import atomic_write_json  # pyarrow: not at the command's start-up

        atomic_write_json(self.path, self.data)


def plain(value: Any) -> Any:
    """JSON data as it reads back (tuples become lists, keys strings), so settings compare as recorded."""
    return json.loads(json.dumps(value))


def settings_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """'key: old -> new' for every leaf that differs (dotted keys)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            out += settings_diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    if old == new:
        return []

    def short(v: Any) -> str:
        text = json.dumps(v)
        return text if len(text) <= 40 else text[:37] + "..."

    return [f"{prefix.rstrip('.')}: {short(old)} -> {short(new)}"]


# ----------------------------------------------------------------------------------------------- phases
@dataclass
class Phase:
    """One step of the pipeline. `run(resume, results)` does it (results: the earlier phases' results, by
    name) and returns a JSON-able summary; `clean()` removes what it wrote, before it starts over."""

    name: str
    detail: str
    settings: dict
    run: Callable[[bool, dict[str, dict]], dict]
    clean: Callable[[], None] = lambda: None
    resumable: bool = False  # a phase that did not finish continues (resume=True) instead of starting over


def run_phases(
    phases: list[Phase],
    state: PipelineState,
    *,
    restart_from: str | None = None,
    on_begin: Callable[[], None] | None = None,
    on_start: Callable[[Phase, int, int, bool], None] | None = None,
    on_skip: Callable[[Phase, int, int, dict], None] | None = None,
    on_done: Callable[[Phase, dict], None] | None = None,
) -> dict[str, dict]:
    """Run the phases in order, skipping those the state records as finished with the same settings (see the
    module docstring); returns every phase's result by name. Every mistake is found before anything runs (and
    before `on_begin`)."""
    names = [p.name for p in phases]
    if restart_from is not None and restart_from not in names:
        raise ParameterError("restart_from", f"takes one of {', '.join(names)}; got '{restart_from}'")
    settings = {p.name: plain(p.settings) for p in phases}
    first = names.index(restart_from) if restart_from is not None else len(phases)  # the first phase to run
    for i, phase in enumerate(phases[:first]):
        record = state.get(phase.name)
        if not state.done(phase.name):
            first = i
            break
        if record["settings"] != settings[phase.name]:
            where = state.path.parent if state.path is not None else "the output directory"
            changes = "; ".join(settings_diff(record["settings"], settings[phase.name])[:3])
            raise HarmoWAMError(
                f"{where}: the settings of phase {phase.name} changed since it ran ({changes}); pass a new --out, "
                f"or --restart-from {phase.name} to redo it and every later phase"
            )
    for phase in phases[first:]:
        record = state.get(phase.name)
        resumable = phase is phases[first] and phase.name != restart_from and phase.resumable
        if record is not None and not (resumable and record["settings"] == settings[phase.name]):
            state.forget(phase.name)  # redone from scratch: a restart, changed settings, or after a redone phase
    if on_begin is not None:
        on_begin()
    results: dict[str, dict] = {}
    for i, phase in enumerate(phases):
        if i < first:
            results[phase.name] = state.get(phase.name).get("result", {})
            if on_skip is not None:
                on_skip(phase, i, len(phases), state.get(phase.name))
            continue
        resume = state.get(phase.name) is not None  # kept above only when it continues
        if not resume:
            phase.clean()
        state.start(phase.name, settings[phase.name], resume)
        if on_start is not None:
            on_start(phase, i, len(phases), resume)
        started = time.perf_counter()
        try:
            result = plain(phase.run(resume, results))
        finally:
            state.add_seconds(phase.name, time.perf_counter() - started)
        state.finish(phase.name, result)
        results[phase.name] = result
        if on_done is not None:
            on_done(phase, state.get(phase.name))
    return results


class Runners(Protocol):
    """What does each phase's work (the command line's shows each command's own progress)."""

    def collect(self, task: str, episodes: int, data: Path, overrides: list[str], workers: int | None) -> Any: ...

    def label(self, data: Path, task: str, overrides: list[str]) -> Any: ...

    def train_wm(
        self, task: str, data: Path, out: Path, resume: bool, max_steps: int | None, overrides: list[str]
    ) -> Any: ...  # a WorldModelRun

    def train_experts(
        self, task: str, data: Path, wm: Path, out: Path, resume: bool, max_steps: int | None, overrides: list[str]
    ) -> Any: ...  # an ExpertsRun

    def export(self, runs: Path, bundles: Path, name: str | None) -> Path: ...

    def eval(self, bundle: Path, plan: PipelinePlan, out: Path) -> Any: ...  # (EvalReport, paths)

    def interaction(self, bundle: Path, plan: PipelinePlan, out: Path) -> Any: ...  # an EvalReport

    def note(self, message: str) -> None: ...


@dataclass
class PipelinePlan:
    """Everything that shapes a run of the pipeline, and where it writes (`harmowam reproduce` / `demo`)."""

    task: str
    out: Path
    episodes: int = 100
    workers: int | None = None
    overrides: list[str] = field(default_factory=list)
    budget_minutes: float | None = None
    wm_steps: int | None = None  # caps the recipe's train_wm.steps (`demo --wm-steps`)
    experts_steps: int | None = None
    protocols: list[str] = field(default_factory=lambda: list(PAPER_PROTOCOLS))
    routers: list[str] = field(default_factory=lambda: list(PAPER_ROUTERS))
    eval_episodes: int = 20
    seed: int = EVAL_SEED
    max_steps: int | None = None  # evaluation step limit (default: the recipe's)
    videos: bool = True
    interaction: bool = True  # the appendix D.2 handover episodes (Table 1)
    data_dir: Path | None = None  # default: out/data
    existing_data: bool = False  # data_dir is a dataset of the user's (`reproduce --data`): the collect phase adds only
    # the episodes it lacks, and nothing ever removes it
    runs_dir: Path | None = None  # default: out/runs
    bundle_name: str | None = None  # default: a time-stamped name
    full: bool = False
    command: str = ""

    @classmethod
    def reproduce(cls, task: str, out: Path | None = None, full: bool = False, **kw) -> PipelinePlan:
        """The paper's protocol: in-domain and position OOD with the gate, predictive and reactive routers; with
        `full` all three OOD protocols and the average and keyframe-average routers too (Fig. 5)."""
        name = load_recipe(task, kw.get("overrides") or []).name
        plan = cls(task, Path(out) if out is not None else Path("reproduce") / name, full=full, **kw)
        if full:
            plan.protocols, plan.routers = list(OOD_KINDS), list(FULL_ROUTERS)
        plan.bundle_name = plan.bundle_name or name
        return plan

    @property
    def data(self) -> Path:
        return self.data_dir or self.out / "data"

    @property
    def runs(self) -> Path:
        return self.runs_dir or self.out / "runs"

    @property
    def bundles(self) -> Path:
        return self.out / "bundles"

    @property
    def state_path(self) -> Path:
        return self.out / STATE_FILE

    @property
    def eval_dir(self) -> Path:
        return self.out / "eval"

    @property
    def interaction_dir(self) -> Path:
        return self.out / "interaction"

    def recipe(self) -> Recipe:
        return load_recipe(self.task, self.overrides)

    def planned_steps(self, recipe: Recipe) -> tuple[int, int]:
        """The step totals of the two training stages (the recipe's, capped by wm_steps / experts_steps)."""
        wm, experts = recipe.train_wm.steps, recipe.train_experts.steps
        return min(wm, self.wm_steps or wm), min(experts, self.experts_steps or experts)

    def budget_split(self, recipe: Recipe) -> tuple[float, float] | None:
        """Minutes for the world model and for the experts: the budget split in proportion to their steps."""
        if self.budget_minutes is None:
            return None
        wm, experts = self.planned_steps(recipe)
        share = wm / (wm + experts)
        return self.budget_minutes * share, self.budget_minutes * (1.0 - share)

    def training_overrides(self, recipe: Recipe) -> tuple[list[str], list[str]]:
        """The two stages' `--set` lists: the plan's, the step count where wm_steps / experts_steps shorten a
        stage (its schedule's horizon too: `--max-steps` alone would only stop it early), and the budget's share."""
        wm, experts = list(self.overrides), list(self.overrides)
        wm_steps, experts_steps = self.planned_steps(recipe)
        if self.wm_steps is not None:
            wm.append(f"train_wm.steps={wm_steps}")
        if self.experts_steps is not None:
            experts.append(f"train_experts.steps={experts_steps}")
        split = self.budget_split(recipe)
        if split is not None:
            wm.append(f"train_wm.max_minutes={split[0]:.6g}")
            experts.append(f"train_experts.max_minutes={split[1]:.6g}")
        return wm, experts

    def check(self) -> Recipe:
        """Every mistake in the settings, as one line, before anything runs; returns the recipe."""
        from harmowam_core.evaluation.runner import check_eval_args

        for name, value in (("episodes", self.episodes), ("eval_episodes", self.eval_episodes)):
            if value < 1:
                raise ParameterError(name, f"must be at least 1, got {value}")
        if self.episodes < 3:
            raise ParameterError("episodes", f"must be at least 3 (training holds episodes out), got {self.episodes}")
        if self.workers is not None and self.workers < 1:
            raise ParameterError("workers", f"must be at least 1, got {self.workers}")
        if self.budget_minutes is not None and not (self.budget_minutes > 0 and math.isfinite(self.budget_minutes)):
            raise ParameterError("budget_minutes", f"must be a positive number, got {self.budget_minutes:g}")
        for name, value in (("wm_steps", self.wm_steps), ("experts_steps", self.experts_steps)):
            if value is not None and value < 1:
                raise ParameterError(name, f"must be at least 1, got {value}")
        check_eval_args(self.protocols, self.routers, self.eval_episodes, True, "sim", self.seed, self.max_steps)
        recipe = self.recipe()
        from harmowam_core.envs.sim.tasks import task_for

        task_for(recipe)  # a recipe without a simulated task fails here, in one line
        if self.existing_data:
            self._check_data(recipe)
        return recipe

    def _check_data(self, recipe: Recipe) -> None:
        """The dataset of --data opened as every phase will read it (info.json, harmowam.json, the episodes, the
        videos' lengths), and refused where the collection could not continue it."""
        from harmowam_core.collect import ATTEMPTS_PER_EPISODE, unknown_seeds
        from harmowam_core.data.meta import read_episode_rows, read_harmowam_meta
        from harmowam_core.data.reader import DatasetReader, read_info

        if not (self.data / "meta" / "info.json").is_file():
            raise HarmoWAMError(f"{self.data}: no dataset there (--data takes a LeRobot v3.0 dataset of the task)")
        read_info(self.data)
        read_harmowam_meta(self.data)
        rows = read_episode_rows(self.data)
        if rows:
            DatasetReader(self.data, recipe.data_mapping())
        unknown = unknown_seeds(rows)
        if unknown and len(rows) < self.episodes:
            seed = ATTEMPTS_PER_EPISODE * unknown
            raise HarmoWAMError(
                f"{self.data} holds {unknown} episode(s) recorded before scene seeds were kept, so the collection "
                f"cannot tell which scenes are new: collect the {self.episodes - len(rows)} missing one(s) first "
                f"(`harmowam collect --task {recipe.name} --out {self.data} --seed {seed} --episodes "
                f"{self.episodes - len(rows)}`)" + (f", or pass --episodes {len(rows)}" if len(rows) >= 3 else "")
            )


def _count_episodes(data: Path) -> int:
    from harmowam_core.data.meta import read_episode_rows

    return len(read_episode_rows(data)) if (data / "meta").is_dir() else 0


def _remove(*paths: Path) -> Callable[[], None]:
    def clean() -> None:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)

    return clean


def pipeline_phases(plan: PipelinePlan, runners: Runners, recipe: Recipe | None = None) -> list[Phase]:
    """The pipeline's phases for `plan`, their work done by `runners`."""
    from harmowam_core.phase_split import SPLIT_EXPERTS, supports_split

    recipe = recipe or plan.recipe()
    data, runs = plan.data, plan.runs
    wm_overrides, experts_overrides = plan.training_overrides(recipe)
    wm_recipe, experts_recipe = load_recipe(plan.task, wm_overrides), load_recipe(plan.task, experts_overrides)
    wm_steps, experts_steps = plan.planned_steps(recipe)
    # what each training stage reads of the model configuration: the world model's section for train-wm, the
    # rest (the experts, the gate, the action chunk and targets) for train-experts, both with the preset's name
    model = asdict(recipe.model_config)
    wm_model = {"preset": recipe.model.preset, "world_model": model.pop("world_model")}
    experts_model = {"preset": recipe.model.preset, **model}
    scene = {k: v for k, v in recipe.to_dict(resolved=False).items() if k not in ("model", "train_wm", "train_experts",
                                                                                "gate")}  # fmt: skip
    budget = plan.budget_split(recipe)
    collect_settings = {"episodes": plan.episodes, "scene": scene}
    if plan.existing_data:  # another dataset is another phase
        collect_settings["data"] = str(data.resolve())

    def collect(resume: bool, results: dict) -> dict:
        have = _count_episodes(data) if resume or plan.existing_data else 0
        if plan.existing_data and not resume:
            more = f": collecting {plan.episodes - have} more into it" if have < plan.episodes else ""
            runners.note(f"{data} holds {have} episodes{more}")
        elif resume and have:
            runners.note(f"resuming: {have} of {plan.episodes} episodes were collected before")
        if have < plan.episodes:
            runners.collect(plan.task, plan.episodes - have, data, plan.overrides, plan.workers)
        have = _count_episodes(data)
        if have < plan.episodes:  # the collection was interrupted (Ctrl-C, SIGTERM) and returned what it kept
            runners.note(f"collection stopped at {have} of {plan.episodes} episodes: nothing runs on a partial dataset")
            raise KeyboardInterrupt  # the phase stays running: the next run continues the collection
        from harmowam_core.data.meta import read_episode_rows

        seeds = sorted(int(r["seed"]) for r in read_episode_rows(data) if r.get("seed") is not None)
        return {"episodes": _count_episodes(data), "seeds": seeds}

    def label(resume: bool, results: dict) -> dict:
        runners.label(data, plan.task, plan.overrides)
        return {}

    def train_wm(resume: bool, results: dict) -> dict:
        run = runners.train_wm(plan.task, data, runs / "wm", resume, plan.wm_steps, wm_overrides)
        ev = run.evaluation
        out = {"steps": run.steps, "planned": wm_steps, "model": str(run.model_dir)}
        if budget is not None:
            out["minutes_cap"] = budget[0]
        if ev is not None:
            out.update(late_model_psnr=ev.late(ev.model_psnr), late_copy_psnr=ev.late(ev.copy_psnr))
        return out

    def train_experts(resume: bool, results: dict) -> dict:
        run = runners.train_experts(
            plan.task, data, runs / "wm" / "model", runs / "experts", resume, plan.experts_steps, experts_overrides
        )
        out = {"steps": run.steps, "planned": experts_steps, "model": str(run.model_dir)}
        if budget is not None:
            out["minutes_cap"] = budget[1]
        if run.report is not None:
            out["gate_accuracy"] = run.report.gate_accuracy
        return out

    def export(resume: bool, results: dict) -> dict:
        return {"bundle": str(runners.export(runs, plan.bundles, plan.bundle_name))}

    def evaluate(resume: bool, results: dict) -> dict:
        report, paths = runners.eval(Path(results["export"]["bundle"]), plan, plan.eval_dir)
        return {k: str(v) for k, v in paths.items()} | {"seconds": report.seconds}

    def interaction(resume: bool, results: dict) -> dict:
        if not supports_split(recipe):
            runners.note(
                f"{recipe.name} defines no first transit target (SimTask.transit_target): the transit/interaction "
                "split is not measured for it"
            )
            return {"supported": False}
        report = runners.interaction(Path(results["export"]["bundle"]), plan, plan.interaction_dir)
        return {"supported": True, "json": str(plan.interaction_dir / "results.json"), "seconds": report.seconds}

    bundle_dir = (
        [plan.bundles / plan.bundle_name, plan.bundles / f"{plan.bundle_name}.partial"] if plan.bundle_name else []
    )
    eval_settings = {"protocols": plan.protocols, "episodes": plan.eval_episodes, "seed": plan.seed,
                     "max_steps": recipe.step_limit(plan.max_steps)}  # fmt: skip
    cap = f", capped at {budget[0]:.1f} min" if budget else ""
    cap_experts = f", capped at {budget[1]:.1f} min" if budget else ""
    phases = [
        Phase("collect", f"{plan.episodes} scripted demonstrations" + (f" in {data}" if plan.existing_data else ""),
              collect_settings, collect, (lambda: None) if plan.existing_data else _remove(data), resumable=True),
        Phase("label", "transit / interaction frames for the gate",
              {"gate": {k: v for k, v in asdict(recipe.gate).items() if k != "threshold"}}, label),
        Phase("train-wm", f"{wm_steps} steps{cap}",
              {"model": wm_model, "train_wm": asdict(wm_recipe.train_wm), "max_steps": plan.wm_steps}, train_wm,
              _remove(runs / "wm"), resumable=True),
        Phase("train-experts", f"{experts_steps} steps{cap_experts}",
              {"model": experts_model, "train_experts": asdict(experts_recipe.train_experts),
               "gate_threshold": recipe.gate.threshold, "max_steps": plan.experts_steps}, train_experts,
              _remove(runs / "experts"), resumable=True),
        Phase("export", "a standalone bundle", {"name": plan.bundle_name}, export, _remove(*bundle_dir)),
        Phase("eval", f"{', '.join(plan.protocols)} × {', '.join(plan.routers)} and the scripted expert, "
              f"{plan.eval_episodes} episodes each (seeds {plan.seed}-{plan.seed + plan.eval_episodes - 1})",
              {**eval_settings, "routers": plan.routers, "scripted": True}, evaluate, _remove(plan.eval_dir)),
    ]  # fmt: skip
    if plan.interaction:
        phases.append(
            Phase("interaction", f"appendix D.2 handover episodes: {', '.join(SPLIT_EXPERTS)} take over from the "
                  f"scripted approach at its pre-grasp pose, {plan.eval_episodes} episodes each",
                  {**eval_settings, "experts": list(SPLIT_EXPERTS)}, interaction, _remove(plan.interaction_dir))
        )  # fmt: skip
    return phases


# ----------------------------------------------------------------------------------------------- the report
def _minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def phase_result(name: str, record: dict) -> str:
    """One line on what a phase produced, from its state record."""
    result = record.get("result") or {}
    if record.get("status") != "done":
        return "did not finish: a re-run continues here"
    if name == "collect":
        seeds = result.get("seeds") or []
        return f"{result.get('episodes')} episodes" + (f", scene seeds {seed_ranges(seeds)}" if seeds else "")
    if name in ("train-wm", "train-experts"):
        text = f"{result.get('steps')} of {result.get('planned')} steps"
        if result.get("steps", 0) < result.get("planned", 0):
            text += f" (stopped by the time cap, {result.get('minutes_cap', 0):.1f} min)"
        return text
    if name == "export":
        return str(result.get("bundle"))
    if name == "interaction" and not result.get("supported", True):
        return "not measured: the task defines no first transit target"
    if name in ("eval", "interaction"):
        return str(result.get("json", ""))
    return ""


def report_markdown(plan: PipelinePlan, state: PipelineState) -> str:
    """report.md: settings, per-phase times, held-out figures, the stage-wise table and plot, Table 1."""
    from harmowam_core.evaluation.report import PROTOCOL_NAMES, EvalReport, stage_table
    from harmowam_core.phase_split import INTERACTION_COVERS, VICINITY

    recipe = plan.recipe()
    lines = [f"# HarmoWAM reproduction: {recipe.name}", ""]
    lines.append(
        f"The simulator version of the paper's protocol, written {time.strftime('%Y-%m-%d %H:%M')} by "
        f"`{plan.command or 'harmowam reproduce ' + plan.task}`."
    )
    lines.append("")
    budget = plan.budget_split(recipe)
    wm_steps, experts_steps = plan.planned_steps(recipe)
    limit = recipe.step_limit(plan.max_steps)
    settings = [
        f"{plan.episodes} scripted demonstrations",
        f"world model {wm_steps} steps, experts {experts_steps} steps"
        + (f" (training budget {plan.budget_minutes:g} min: {budget[0]:.1f} + {budget[1]:.1f})" if budget else ""),
        f"evaluation: {plan.eval_episodes} episodes per row, scene seeds {plan.seed}-"
        f"{plan.seed + plan.eval_episodes - 1}, step limit {limit}",
    ]
    if plan.overrides:
        settings.append("recipe overrides: " + ", ".join(f"`{o}`" for o in plan.overrides))
    lines += [f"- {s}" for s in settings] + [""]

    lines += ["## Phases", "", "| phase | time | result |", "|---|---:|---|"]
    for name, record in sorted(state.phases.items(), key=lambda item: PHASES.index(item[0])):
        lines.append(f"| {name} | {_minutes(record.get('seconds', 0.0))} | {phase_result(name, record)} |")
    total = sum(r.get("seconds", 0.0) for r in state.phases.values())
    lines += [f"| all | {_minutes(total)} | |", ""]

    wm_eval = _read_json(plan.runs / "wm" / "evaluation.json")
    if wm_eval:
        gain = wm_eval["late_model_psnr"] - wm_eval["late_copy_psnr"]
        lines += [
            "## World model (held out)",
            "",
            f"Episodes {wm_eval.get('held_out_episodes')}, {wm_eval.get('clips')} clips, "
            f"{wm_eval.get('denoising_steps')} denoising steps, {wm_eval.get('steps')} training steps. PSNR of "
            f"frames {wm_eval.get('late_frames', '7-13')}: **{wm_eval['late_model_psnr']:.2f} dB** predicted against "
            f"{wm_eval['late_copy_psnr']:.2f} dB copying the current frame ({gain:+.2f} dB).",
            "",
        ]
        if wm_eval.get("late_moving_model_psnr") is not None:  # runs before the moving-pixel score lack it
            lines[-1:-1] = [
                f"On the pixels that move (the arm and the objects): {wm_eval['late_moving_model_psnr']:.2f} dB "
                f"predicted against {wm_eval['late_moving_copy_psnr']:.2f} dB copying.",
            ]
    experts = _read_json(plan.runs / "experts" / "report.json")
    if experts and experts.get("errors"):
        counts = experts.get("counts", {})
        groups = ("transit", "interaction", "all")
        lines += [
            "## Experts (held out)",
            "",
            f"Mean |action error| in standardised units, episodes {experts.get('episodes')}, "
            f"{experts.get('frames')} frames, {experts.get('steps')} training steps.",
            "",
            "| expert | " + " | ".join(f"{g} ({counts.get(g, 0)})" for g in groups) + " |",
            "|---|" + "---:|" * len(groups),
        ]
        for name, row in experts["errors"].items():
            cells = ["-" if row.get(g) is None else f"{row[g]:.3f}" for g in groups]
            lines.append(f"| {'routed by the gate' if name == 'routed' else name} | " + " | ".join(cells) + " |")
        if experts.get("gate_accuracy") is not None:
            lines += ["", f"Gate frame accuracy: **{100 * experts['gate_accuracy']:.1f}%** "
                      f"(threshold {experts.get('gate_threshold')})."]  # fmt: skip
        lines.append("")

    evaluation = _read_json(plan.eval_dir / "results.json") if state.done("eval") else None
    report = EvalReport.from_dict(evaluation) if evaluation else None
    if report is not None:
        stages = report.stage_names
        seeds = seed_ranges(list(range(report.seed, report.seed + report.episodes)))
        lines += [
            "## Stage-wise success (paper Tables 5-8 form)",
            "",
            "Fraction of episodes reaching each stage (stages are sequential); the same scenes for every row.",
            "",
            "| router | protocol | episodes | seeds | " + " | ".join(f"S{k + 1} {s}" for k, s in enumerate(stages))
            + " | avg |",
            "|---|---|---:|---|" + "---:|" * (len(stages) + 1),
        ]  # fmt: skip
        for row in stage_table(report.results, stages, report.actors, report.protocols):
            rates = " | ".join(f"{r:.2f}" for r in row.stage_rates)
            actor = "scripted (upper bound)" if row.actor == "scripted" else row.actor
            lines.append(f"| {actor} | {PROTOCOL_NAMES[row.protocol]} | {row.episodes} | {seeds} | {rates} | "
                         f"**{row.avg:.2f}** |")  # fmt: skip
        lines += ["", f"![stage-wise success]({plan.eval_dir.relative_to(plan.out) / 'success.png'})", ""]

    rows = table1(plan, state)
    if rows is not None:
        lines += ["## Transit and interaction (paper Table 1 form, appendix D.2)", ""]
        if not rows:
            lines += [f"Not measured: {recipe.name} defines no first transit target.", ""]
        else:
            covers = INTERACTION_COVERS.get(recipe.name, "")
            if covers:
                covers = f", so interaction covers everything from the pre-grasp pose to the end of S1: {covers}"
            lines += [
                f"Transit: the gripper enters the first target object's vicinity (within {100 * VICINITY:.0f} cm of "
                f"it horizontally and between its top and {100 * VICINITY:.0f} cm above it) within the step limit, "
                "in the episodes of the table above. Interaction: the scripted expert drives the approach and hands "
                "over at its pre-grasp pose (the first step in that vicinity, gripper open); success is stage S1 "
                f"({stages[0]}) within the step limit{covers}.",
                "",
                "| expert | protocol | transit | interaction |",
                "|---|---|---:|---:|",
            ]
            for row in rows:
                transit, inter = split_cells(row)
                lines.append(f"| {SPLIT_NAMES.get(row.actor, row.actor)} | {PROTOCOL_NAMES[row.protocol]} | "
                             f"{transit} | {inter} |")  # fmt: skip
            lines.append("")
    return "\n".join(lines)


SPLIT_NAMES = {
    "predictive": "predictive (joint modeling)",
    "reactive": "reactive (imagine-then-execute)",
    "scripted": "scripted (reference)",
}


def table1(plan: PipelinePlan, state: PipelineState) -> list | None:
    """Table 1's rows (`phase_split.SplitRow`) once eval and interaction have finished; [] where the task does
    not support the split; None before."""
    from harmowam_core.evaluation.report import EvalReport
    from harmowam_core.phase_split import SPLIT_EXPERTS, split_rows

    record = state.get("interaction")
    if not (plan.interaction and state.done("eval") and record is not None and record.get("status") == "done"):
        return None
    if not record.get("result", {}).get("supported", True):
        return []
    evaluation, held = (_read_json(d / "results.json") for d in (plan.eval_dir, plan.interaction_dir))
    if not evaluation or not held:
        return None
    report = EvalReport.from_dict(evaluation)
    handover = EvalReport.from_dict(held).results
    return split_rows(report.results, handover, [*SPLIT_EXPERTS, "scripted"], report.protocols)


def split_cells(row) -> tuple[str, str]:
    """A Table 1 row's transit and interaction cells: "k/n"; "-" for the scripted reference's interaction."""
    inter = "-" if row.actor == "scripted" else f"{row.interaction}/{row.interaction_episodes}"
    if row.actor != "scripted" and row.handed_over < row.interaction_episodes:
        inter += f" ({row.interaction_episodes - row.handed_over} without a handover)"
    return f"{row.transit}/{row.transit_episodes}", inter


def write_report(plan: PipelinePlan, state: PipelineState) -> Path:
    from harmowam_core.data.meta import atomic_write_bytes

    path = plan.out / REPORT_FILE
    atomic_write_bytes(path, report_markdown(plan, state).encode())
    return path


def check_out_dir(plan: PipelinePlan) -> None:
    """Refuse an --out that holds files but no pipeline state: reproduce would write (and clean) inside it."""
    out = plan.out
    if out.exists() and not out.is_dir():
        raise HarmoWAMError(f"--out {out} is a file; choose a directory")
    if out.is_dir() and any(out.iterdir()) and not plan.state_path.is_file():
        raise HarmoWAMError(f"{out} holds files but no {STATE_FILE}: choose another --out (or empty it)")
