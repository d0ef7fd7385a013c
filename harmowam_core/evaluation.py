"""Stage-wise evaluation of a bundle in the simulator, in-domain and under the OOD protocols (paper 4.2-4.4).

    report = evaluate(Path("bundles/stack_cans-20261124-120000"), protocols=["none", "position"],
                      routers=["gate", "predictive"], episodes=20, seed=1000, out=Path("runs/eval/x"))
    report.rows                       # one StageRow per (actor, protocol): stage success rates and their mean
    write_outputs(report, out)        # results.json, results.csv, success.png

Every actor (router, or the scripted expert) is evaluated on the same scenes: episode i of a protocol uses
seed + i, so rows are paired comparisons. Rows follow the paper's Tables 2-3 and 5-8: the fraction of episodes
reaching each stage (stages are sequential) and their mean ("avg"). Episode videos go to
out/videos/<actor>/<protocol>/episode_<i>.mp4.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from harmowam_core.envs import OOD_KINDS
from harmowam_core.errors import HarmoWAMError
from harmowam_core.policy.rollout import COLOURS, EpisodeResult, PolicyActor, ScriptedActor, label_font, run_episode
from harmowam_core.policy.routers import ROUTERS

ACTOR_COLOURS = {"gate": (39, 174, 96), "keyframe-average": (22, 160, 133), **COLOURS}
PROTOCOL_NAMES = {"none": "in-domain", "background": "background", "position": "position", "objects": "objects"}


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

    @property
    def rows(self) -> list[StageRow]:
        return stage_table(self.results, self.stage_names, self.actors, self.protocols)

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "results"}
        out["rows"] = [asdict(r) for r in self.rows]
        out["results"] = [r.to_dict() for r in self.results]
        return out


def parse_protocols(ood: str) -> list[str]:
    """`--ood`: one protocol, a comma-separated list of them, or all."""
    if ood == "all":
        return list(OOD_KINDS)
    protocols = [p.strip() for p in ood.split(",") if p.strip()]
    unknown = [p for p in protocols if p not in OOD_KINDS]
    if unknown or not protocols:
        raise HarmoWAMError(f"--ood takes {', '.join(OOD_KINDS)} (comma-separated) or all; got '{ood}'")
    return list(dict.fromkeys(protocols))


def check_eval_args(protocols: list[str], routers: list[str], episodes: int, scripted: bool, backend: str) -> None:
    """Every mistake in an evaluation's settings, before anything is loaded."""
    if episodes < 1:
        raise HarmoWAMError(f"--episodes must be at least 1, got {episodes}")
    for router in routers:
        if router not in ROUTERS:
            raise HarmoWAMError(f"unknown router '{router}'; choose from {', '.join(ROUTERS)}")
    for protocol in protocols:
        if protocol not in OOD_KINDS:
            raise HarmoWAMError(f"unknown OOD protocol '{protocol}' (choose from {', '.join(OOD_KINDS)})")
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
) -> EvalReport:
    """Run `episodes` episodes per protocol for every router (and the scripted expert) on the bundle's task;
    on the real station (`backend="real"`) the operator scores every episode's stages."""
    from harmowam_core.envs import make_env
    from harmowam_core.models.experts import Experts
    from harmowam_core.models.world_model import WorldModel
    from harmowam_core.policy.bundle import bundle_recipe, read_bundle
    from harmowam_core.policy.policy import HarmoWAMPolicy

    check_eval_args(protocols, routers, episodes, scripted, backend)
    meta = read_bundle(bundle)
    recipe = bundle_recipe(bundle)
    steps = max_steps or recipe.max_episode_steps
    wm, experts = WorldModel.from_pretrained(bundle / "world_model"), Experts.from_pretrained(bundle / "experts")
    policies = [
        HarmoWAMPolicy(wm, experts, recipe.to_dict(resolved=False), router=r, **(policy_options or {}))
        for r in dict.fromkeys(routers)
    ]
    actors = [PolicyActor(p) for p in policies] + ([ScriptedActor()] if scripted else [])
    report = EvalReport(
        str(bundle), meta["task"], [s.name for s in recipe.stages], protocols, [a.name for a in actors], episodes, seed
    )
    camera = policies[0].camera
    total, start = len(protocols) * episodes * len(actors), time.perf_counter()
    try:
        with make_env(recipe, backend, station=station, dry_run=dry_run) as env:
            for protocol in protocols:
                for i in range(episodes):
                    for actor in actors:
                        video = out / "videos" / actor.name / protocol / f"episode_{i:03d}.mp4" if videos else None
                        result = run_episode(
                            env, actor, seed=seed + i, ood=protocol, max_steps=steps, episode=i,
                            video=video, fps=recipe.fps, camera=camera, on_step=on_step,
                        )  # fmt: skip
                        if result.interrupted:
                            report.interrupted = True
                            return report
                        report.results.append(result)
                        if on_episode is not None:
                            on_episode(result, len(report.results), total)
    finally:
        for policy in policies:
            policy.close()
        report.seconds = time.perf_counter() - start
    return report


# ----------------------------------------------------------------------------------------------- outputs
def write_outputs(report: EvalReport, out: Path) -> dict[str, Path]:
    """results.json (everything, per episode too), results.csv (the table) and success.png (a bar chart)."""
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
    bar_chart(report, paths["png"])
    return paths


def bar_chart(report: EvalReport, path: Path) -> None:
    """Grouped bars: one group per protocol, one bar per actor and stage (darker = later stage)."""
    rows = report.rows
    protocols = [p for p in report.protocols if any(r.protocol == p for r in rows)]
    actors = [a for a in report.actors if any(r.actor == a for r in rows)]
    stages = len(report.stage_names)
    bar, gap, left, top, height = 14, 24, 50, 40, 240
    group = max(1, len(actors)) * (stages * bar + 8)
    width = left + max(1, len(protocols)) * (group + gap) + 20
    legend_h = 18 * (len(actors) + 1)
    image = Image.new("RGB", (max(width, 480), top + height + 50 + legend_h), "white")
    draw, font = ImageDraw.Draw(image), label_font()
    draw.text((left, 10), f"{report.task}: stage-wise success, {report.episodes} episodes per bar", fill="black",
              font=font)  # fmt: skip
    for k in range(6):
        y = top + height - k * height / 5
        draw.line([left - 4, y, image.width - 10, y], fill=(225, 225, 225))
        draw.text((8, y - 8), f"{k / 5:.1f}", fill="black", font=font)
    palette = [ACTOR_COLOURS.get(a, (120, 120, 120)) for a in actors]
    for g, protocol in enumerate(protocols):
        x0 = left + g * (group + gap)
        draw.text((x0, top + height + 6), PROTOCOL_NAMES[protocol], fill="black", font=font)
        for a, actor in enumerate(actors):
            row = next((r for r in rows if r.actor == actor and r.protocol == protocol), None)
            if row is None:
                continue
            colour = np.array(palette[a])
            for s, rate in enumerate(row.stage_rates):
                shade = tuple(int(c) for c in colour * (1.0 - 0.45 * s / max(1, stages - 1)))
                x = x0 + a * (stages * bar + 8) + s * bar
                draw.rectangle([x, top + height - rate * height, x + bar - 2, top + height], fill=shade)
    y = top + height + 30
    for a, actor in enumerate(actors):
        draw.rectangle([left, y + 3, left + 12, y + 13], fill=tuple(palette[a]))
        draw.text((left + 18, y), actor, fill="black", font=font)
        y += 18
    draw.text((left, y), "bars per actor: " + ", ".join(report.stage_names) + " (darker = later)", fill="black",
              font=font)  # fmt: skip
    image.save(path)
