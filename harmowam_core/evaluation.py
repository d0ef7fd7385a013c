"""Stage-wise evaluation of a bundle in the simulator, in-domain and under the OOD protocols (paper 4.2-4.4).

    report = evaluate(Path("bundles/stack_cans-20261124-120000"), protocols=["none", "position"],
                      routers=["gate", "predictive"], episodes=20, seed=1000, out=Path("runs/eval/x"))
    report.rows                       # one StageRow per (actor, protocol): stage success rates and their mean
    write_outputs(report, out)        # results.json, results.csv, success.png/.pdf/.svg

Every actor (router, or the scripted expert) is evaluated on the same scenes: episode i of a protocol uses
seed + i, so rows are paired comparisons. Rows follow the paper's Tables 2-3 and 5-8: the fraction of episodes
reaching each stage (stages are sequential) and their mean ("avg"). Episode videos go to
out/videos/<actor>/<protocol>/episode_<i>.mp4.

Each (protocol, episode, actor) is one job. `workers` > 1 runs the jobs in spawned simulator processes
(`harmowam_core.workers`), each loading the bundle once; the report lists the results in the same order as one
worker would, with the same per-episode results. `shard=(i, N)` runs only every N-th job from job i (for a
cluster array) and marks the report partial; `merge_reports` combines the shards' reports into the report of
one run, refusing shards of different bundles, protocols, actors, seeds or settings.
"""

from __future__ import annotations

import csv
import json
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from harmowam_core.envs.ood import PROTOCOLS, check_protocol, parse_protocols  # noqa: F401 (re-exported)
from harmowam_core.errors import HarmoWAMError
from harmowam_core.policy.rollout import COLOURS, EpisodeResult, PolicyActor, ScriptedActor, run_episode
from harmowam_core.policy.routers import ROUTER_TABLE, check_router
from harmowam_core.workers import (
    WorkerError,
    WorkerPool,
    bundle_bytes,
    check_workers,
    deterministic_cpu,
    resolve,
    sigterm_as_interrupt,
)

EVAL_SESSION = "harmowam_core.evaluation:EvalSession"  # what plays the jobs (phase_split has another)
ACTOR_COLOURS = {**{name: r.colour for name, r in ROUTER_TABLE.items()}, "scripted": COLOURS["scripted"]}
PROTOCOL_NAMES = {name: p.label for name, p in PROTOCOLS.items()}


@dataclass
class StageRow:
    actor: str
    protocol: str
    episodes: int
    stage_rates: list[float]
    avg: float  # mean of the stage rates, the paper's "Avg"
    success: float  # every stage reached (= the last stage's rate, stages being sequential)


@dataclass
class EvalReport:
    bundle: str
    task: str
    stage_names: list[str]
    protocols: list[str]
    actors: list[str]
    episodes: int
    seed: int
    results: list[EpisodeResult] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)  # what else shapes the results: bundle identity, steps, options
    shard: list[int] | None = None  # [i, N] for a partial report of shard i of N; None for a whole run
    workers: int = 1

    @property
    def rows(self) -> list[StageRow]:
        return stage_table(self.results, self.stage_names, self.actors, self.protocols)

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "results"}
        out["rows"] = [asdict(r) for r in self.rows]
        out["results"] = [r.to_dict() for r in self.results]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> EvalReport:
        fields = {k: data[k] for k in ("bundle", "task", "stage_names", "protocols", "actors", "episodes", "seed")}
        report = cls(**fields, interrupted=data.get("interrupted", False), seconds=data.get("seconds", 0.0))
        report.settings, report.shard = data.get("settings", {}), data.get("shard")
        report.workers = data.get("workers", 1)
        report.results = [EpisodeResult(**r) for r in data.get("results", [])]
        return report

    def jobs(self) -> list[tuple[str, int, str]]:
        """Every (protocol, episode, actor) of the whole run, in report order."""
        return [(p, i, a) for p in self.protocols for i in range(self.episodes) for a in self.actors]

    def sort_results(self) -> None:
        order = {job: k for k, job in enumerate(self.jobs())}
        self.results.sort(key=lambda r: order[(r.protocol, r.episode, r.actor)])


def check_eval_args(
    protocols: list[str],
    routers: list[str],
    episodes: int,
    scripted: bool,
    backend: str,
    seed: int = 0,
    max_steps: int | None = None,
) -> None:
    """Every mistake in an evaluation's settings, before anything is loaded."""
    if episodes < 1:
        raise HarmoWAMError(f"--episodes must be at least 1, got {episodes}")
    if seed < 0:
        raise HarmoWAMError(f"--seed must be at least 0, got {seed}")
    if max_steps is not None and max_steps < 1:
        raise HarmoWAMError(f"--max-steps must be at least 1, got {max_steps}")
    for router in routers:
        check_router(router)
    for protocol in protocols:
        check_protocol(protocol)
    if scripted and backend != "sim":
        raise HarmoWAMError("the scripted expert exists only in the simulator: drop --scripted on the real station")


def stage_table(
    results: list[EpisodeResult], stage_names: list[str], actors: list[str], protocols: list[str]
) -> list[StageRow]:
    """Stage-wise success per (actor, protocol) in the given order; pairs without episodes are left out."""
    rows = []
    for actor in actors:
        for protocol in protocols:
            mine = [r for r in results if r.actor == actor and r.protocol == protocol]
            if not mine:
                continue
            reached = np.array([[bool(s) for s in r.stages] for r in mine], dtype=float).reshape(
                len(mine), len(stage_names)
            )
            rates = [float(x) for x in reached.mean(0)]
            rows.append(
                StageRow(actor, protocol, len(mine), rates, float(np.mean(rates)), float(reached.all(1).mean()))
            )
    return rows


def _quiet_libraries() -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


class EvalSession:
    """A bundle's actors on one station: what one evaluation worker (or the evaluating process) holds. `run`
    plays one job, (protocol, episode, actor, video path or None), and returns its EpisodeResult."""

    def __init__(
        self,
        bundle: Path,
        routers: list[str],
        scripted: bool,
        seed: int,
        max_steps: int | None = None,
        policy_options: dict | None = None,
        backend: str = "sim",
        station: Path | None = None,
        dry_run: bool = False,
    ):
        from harmowam_core.envs import make_env
        from harmowam_core.policy.bundle import bundle_recipe
        from harmowam_core.policy.policy import HarmoWAMPolicy

        _quiet_libraries()  # a worker process: no loading bars of its own
        self.recipe = recipe = bundle_recipe(bundle)
        self.seed, self.steps = seed, max_steps or recipe.max_episode_steps
        unique = list(dict.fromkeys(routers))
        self.policies = HarmoWAMPolicy.from_bundle_routers(bundle, unique, **(policy_options or {})) if unique else []
        actors = [PolicyActor(p) for p in self.policies] + ([ScriptedActor()] if scripted else [])
        self.actors = {a.name: a for a in actors}
        self.camera = self.policies[0].camera if self.policies else "front"
        self.env = make_env(recipe, backend, station=station, dry_run=dry_run)
        self.simulator = backend == "sim"

    def run(self, job: tuple, on_step: Callable[[int, str], None] | None = None) -> EpisodeResult:
        """The episode of `job`; in the simulator its `transit` records whether the gripper reached the first
        target's vicinity (`phase_split`, paper appendix D.2)."""
        from harmowam_core.phase_split import TransitProbe

        protocol, episode, actor, video = job
        probe = TransitProbe(self.env) if self.simulator else None

        def stepped(done: int, used: str) -> None:
            if probe is not None:
                probe.update()
            if on_step is not None:
                on_step(done, used)

        with deterministic_cpu() if self.simulator else nullcontext():
            result = run_episode(
                self.env, self.actors[actor], seed=self.seed + episode, ood=protocol, max_steps=self.steps,
                episode=episode, video=video, fps=self.recipe.fps, camera=self.camera, on_step=stepped,
            )  # fmt: skip
        result.transit = probe.reached if probe is not None else None
        return result

    def close(self) -> None:
        for policy in self.policies:
            policy.close()
        self.env.close()


def evaluate(
    bundle: Path,
    protocols: list[str],
    routers: list[str],
    episodes: int,
    seed: int,
    out: Path,
    *,
    scripted: bool = False,
    max_steps: int | None = None,
    videos: bool = True,
    policy_options: dict | None = None,
    on_episode: Callable[[EpisodeResult, int, int], None] | None = None,
    on_step: Callable[[int, str], None] | None = None,
    backend: str = "sim",
    station: Path | None = None,
    dry_run: bool = False,
    workers: int | None = 1,
    shard: tuple[int, int] = (0, 1),
    session: str = EVAL_SESSION,
) -> EvalReport:
    """Run `episodes` episodes per protocol for every router (and the scripted expert) on the bundle's task;
    on the real station (`backend="real"`) the operator scores every episode's stages. See the module docstring
    for `workers` and `shard`; `on_step` is called only when the episodes run in this process. `session` names
    the EvalSession class that plays the jobs (`phase_split.HANDOVER_SESSION`: interaction episodes)."""
    from harmowam_core.policy.bundle import bundle_recipe, read_bundle

    check_eval_args(protocols, routers, episodes, scripted, backend, seed, max_steps)
    meta = read_bundle(bundle)
    recipe = bundle_recipe(bundle)
    actors = list(dict.fromkeys(routers)) + (["scripted"] if scripted else [])
    report = EvalReport(str(bundle), meta["task"], [s.name for s in recipe.stages], protocols, actors, episodes, seed)
    report.settings = {
        "bundle": {"name": meta.get("name"), "created": meta.get("created")},
        "max_steps": max_steps or recipe.max_episode_steps,
        "policy": {k: v for k, v in sorted((policy_options or {}).items())},
        "backend": backend,
    }
    if session != EVAL_SESSION:
        report.settings["session"] = session
    index, count = shard
    report.shard = [index, count] if count > 1 else None
    jobs = [
        (p, i, a, out / "videos" / a / p / f"episode_{i:03d}.mp4" if videos else None)
        for p, i, a in report.jobs()[index::count]
    ]
    report.workers = check_workers(workers, len(jobs), backend == "sim", bundle_bytes(bundle))
    args = (bundle, routers, scripted, seed, max_steps, policy_options, backend, station, dry_run)
    start = time.perf_counter()

    def finished(result: EpisodeResult) -> None:
        report.results.append(result)
        if on_episode is not None:
            on_episode(result, len(report.results), len(jobs))

    try:
        with sigterm_as_interrupt():
            if report.workers == 1:
                _run_here(resolve(session)(*args), jobs, report, finished, on_step)
            else:
                with WorkerPool(report.workers, session, args) as pool:
                    try:
                        for _, result in pool.run((job[:3], job) for job in jobs):
                            finished(result)
                    except KeyboardInterrupt:
                        for _, result in pool.drain():  # episodes that ended while we were interrupted
                            finished(result)
                        _remove_unfinished_videos(jobs, report)
                        raise
    except KeyboardInterrupt:
        report.interrupted = True
    except WorkerError as err:
        report.sort_results()
        raise EvalFailed(report, episode_failure(err, seed)) from None
    finally:
        report.seconds = time.perf_counter() - start
        report.sort_results()
    return report


def _remove_unfinished_videos(jobs: list, report: EvalReport) -> None:
    """Workers stopped midway leave unplayable mp4s: remove the videos of the episodes that did not finish."""
    done = {(r.protocol, r.episode, r.actor) for r in report.results}
    for job in jobs:
        if job[:3] not in done and job[3] is not None:
            Path(job[3]).unlink(missing_ok=True)


class EvalFailed(HarmoWAMError):
    """An episode failed (or a worker died); `report` holds the episodes that finished before."""

    def __init__(self, report: EvalReport, message: str):
        super().__init__(message)
        self.report = report


def episode_failure(err: WorkerError, seed: int) -> str:
    """One line for a failed evaluation job: which episode (its router, protocol and seed) and why."""
    if err.key is None:
        return err.describe()
    protocol, i, actor = err.key
    return f"episode {i} ({actor}, {protocol} scenes, seed {seed + i}) failed: {err.describe()}"


def _run_here(session: EvalSession, jobs: list, report: EvalReport, finished, on_step) -> None:
    """The jobs in this process; a failing episode is reported as a worker's would be (one line naming it)."""
    try:
        for job in jobs:
            try:
                result = session.run(job, on_step=on_step)
            except (KeyboardInterrupt, HarmoWAMError):
                raise
            except Exception as err:  # noqa: BLE001 - one line naming the episode, its traceback in a file
                message = f"{type(err).__name__}: {err}"
                raise WorkerError(job[:3], message, traceback.format_exc()) from err
            if result.interrupted:
                raise KeyboardInterrupt
            finished(result)
    finally:
        session.close()


def merge_reports(reports: list[EvalReport], names: list[str]) -> EvalReport:
    """One report from the shards' partial reports (see the module docstring); HarmoWAMError naming the
    shard that does not fit."""
    if not reports:
        raise HarmoWAMError("eval merge needs at least one shard's results")
    first = reports[0]

    def identity(r: EvalReport) -> dict:
        return {
            "task": r.task, "protocols": r.protocols, "actors": r.actors, "episodes": r.episodes, "seed": r.seed,
            "settings": r.settings, "shards": (r.shard or [0, 1])[1],
        }  # fmt: skip

    want = identity(first)
    for report, name in zip(reports, names, strict=True):
        got = identity(report)
        differ = [k for k in want if got[k] != want[k]]
        if differ:
            what = ", ".join(f"{k} {got[k]!r} (not {want[k]!r})" for k in differ)
            raise HarmoWAMError(f"{name} is not a shard of the same evaluation as {names[0]}: {what}")
        if report.interrupted:
            raise HarmoWAMError(f"{name} was stopped before its end; run that shard again")
    count = want["shards"]
    seen: dict[int, str] = {}
    for report, name in zip(reports, names, strict=True):
        index = (report.shard or [0, 1])[0]
        if index in seen:
            raise HarmoWAMError(f"{name} and {seen[index]} are both shard {index}/{count}")
        seen[index] = name
    missing = [f"{i}/{count}" for i in range(count) if i not in seen]
    if missing:
        raise HarmoWAMError(f"shard(s) {', '.join(missing)} missing: pass the results of all {count} shards")
    merged = EvalReport(first.bundle, first.task, first.stage_names, first.protocols, first.actors, first.episodes,
                        first.seed, settings=first.settings)  # fmt: skip
    merged.results = [r for report in reports for r in report.results]
    merged.seconds = sum(r.seconds for r in reports)
    merged.workers = sum(r.workers for r in reports)
    if sorted((r.protocol, r.episode, r.actor) for r in merged.results) != sorted(merged.jobs()):
        raise HarmoWAMError("the shards' episodes do not cover the evaluation exactly once; run the shards again")
    merged.sort_results()
    return merged


def read_report(path: Path) -> EvalReport:
    """A results.json written by `write_outputs` (a directory holding one, or the file)."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise HarmoWAMError(f"{path}: no results.json (the output directory of `harmowam eval`)")
    try:
        return EvalReport.from_dict(json.loads(file.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise HarmoWAMError(f"{file}: not the results of `harmowam eval` ({type(err).__name__}: {err})") from None


# ----------------------------------------------------------------------------------------------- outputs
def write_outputs(report: EvalReport, out: Path) -> dict[str, Path]:
    """results.json (everything, per episode too), results.csv (the table) and the bar chart as success.png,
    success.pdf and success.svg (the vector files for a paper)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "png": out / "success.png"}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2))
    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "actor", "protocol", "episodes", *report.stage_names, "avg", "success"])
        for row in report.rows:
            rates = [f"{r:.4f}" for r in row.stage_rates]
            writer.writerow(
                [report.task, row.actor, row.protocol, row.episodes, *rates, f"{row.avg:.4f}", f"{row.success:.4f}"]
            )
    paths.update({chart.suffix[1:]: chart for chart in bar_chart(report, paths["png"])})
    return paths


CHART_FORMATS = {".png": {}, ".pdf": {"CreationDate": None}, ".svg": {"Date": None}}  # suffix: its metadata


def bar_chart(report: EvalReport, path: Path) -> list[Path]:
    """Grouped bars: one group per protocol, one bar per actor and stage (darker = later stage). Saved at `path`
    (a .png) and as .pdf and .svg beside it; returns the three paths. Drawn with matplotlib's Agg canvas (no
    display); text stays text in the vector files, which carry no creation date (same report, same bytes)."""
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = report.rows
    protocols = [p for p in report.protocols if any(r.protocol == p for r in rows)]
    actors = [a for a in report.actors if any(r.actor == a for r in rows)]
    stages = max(1, len(report.stage_names))
    palette = {a: np.array(ACTOR_COLOURS.get(a, (120, 120, 120))) / 255.0 for a in actors}
    bar, pad = 1.0, 0.6  # a bar's width; the space after each actor's bars (x units)
    group = max(1, len(actors)) * (stages * bar + pad)  # one protocol's width
    gap = 1.5 * stages * bar

    rc = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none", "svg.hashsalt": "harmowam"}
    with rc_context(rc):
        width = max(6.4, 1.5 + 0.18 * len(protocols) * (group + gap))
        fig = Figure(figsize=(width, 4.2 + 0.25 * len(actors)), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        centres = []
        for g, protocol in enumerate(protocols):
            x0 = g * (group + gap)
            centres.append(x0 + (group - pad) / 2)
            for a, actor in enumerate(actors):
                row = next((r for r in rows if r.actor == actor and r.protocol == protocol), None)
                if row is None:
                    continue
                for s, rate in enumerate(row.stage_rates):
                    shade = palette[actor] * (1.0 - 0.45 * s / max(1, stages - 1))
                    x = x0 + a * (stages * bar + pad) + s * bar + bar / 2
                    ax.bar(x, rate, width=0.9 * bar, color=tuple(shade), linewidth=0)
        ax.set_xticks(centres, [PROTOCOL_NAMES.get(p, p) for p in protocols])
        ax.set_ylim(0.0, 1.0)
        ax.set_ylabel("fraction of episodes reaching the stage")
        ax.yaxis.grid(True, color="0.88")
        ax.set_axisbelow(True)
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_title(f"{report.task}: stage-wise success, {report.episodes} episodes per bar")
        handles = [Patch(color=tuple(palette[a]), label=a) for a in actors]
        stage_order = ", ".join(report.stage_names) + " (darker = later)"
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=max(1, min(len(actors), 6)),
            frameon=False,
            title=f"bars per actor: {stage_order}",
        )
        paths = [path.with_suffix(suffix) for suffix in CHART_FORMATS]
        for out in paths:
            fig.savefig(out, dpi=150, metadata=CHART_FORMATS[out.suffix])
    return paths
