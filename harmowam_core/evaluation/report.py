"""Evaluation reports: stage-wise success rows (the paper's Tables 2-3 and 5-8), merging shards, and the outputs
(results.json, results.csv, and the success chart with matplotlib as png, pdf and svg)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from harmowam_core.envs.ood import PROTOCOLS
from harmowam_core.errors import HarmoWAMError
from harmowam_core.evaluation.rollout import EpisodeResult
from harmowam_core.evaluation.video import COLOURS
from harmowam_core.policy.routers import ROUTER_TABLE

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
