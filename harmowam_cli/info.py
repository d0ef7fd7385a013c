"""`harmowam info DATASET`: what a dataset holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from harmowam_cli._common import SetOption, console, seed_ranges, user_errors
from harmowam_core.config import load_recipe, sections_from_overrides
from harmowam_core.data.summary import summarize


def info(
    dataset: Annotated[
        str, typer.Argument(help="Dataset directory (LeRobot v3.0 layout), or owner/name in the local LeRobot cache.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    recipe: Annotated[str | None, typer.Option(help="Recipe whose data section maps the features.")] = None,
    set_: SetOption = None,
) -> None:
    """Episodes, frames, fps, features, cameras, tasks, label coverage and recorded stage success rates, and how
    the features map onto cameras, action and state (--recipe, --set data.cameras.front=KEY) with what is
    left unmapped."""
    show_info(dataset, as_json, recipe, set_ or [])


@user_errors
def show_info(
    dataset: str | Path, as_json: bool, recipe: str | None = None, overrides: list[str] | None = None
) -> None:
    overrides = overrides or []
    if recipe:
        mapping = load_recipe(recipe, overrides).data_mapping()
    else:
        mapping = sections_from_overrides(overrides)[1].to_mapping()
    s = summarize(dataset, mapping)
    if as_json:
        print(json.dumps(s, indent=2))
        return
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("dataset", s["path"])
    head.add_row("format", f"LeRobot {s['codebase_version']}, robot {s['robot_type']}, {s['arms']} arm(s)")
    head.add_row("task", str(s["task"] or "-"))
    head.add_row("episodes", str(s["episodes"]))
    head.add_row("frames", f"{s['frames']} at {s['fps']} fps ({s['duration_s']:.1f} s)")
    head.add_row("instructions", "\n".join(s["instructions"]) or "-")
    head.add_row("scene seeds", _scenes(s["scenes"]))
    head.add_row(
        "cameras",
        "\n".join(f"{n} {c['height']}x{c['width']} {c['codec']} <- {c['key']}" for n, c in s["cameras"].items()),
    )
    m = s["mapping"]
    space = (
        "HarmoWAM's 7 per arm"
        if m["action_space"] == "harmowam"
        else "native: trains as is, deploys only where it runs"
    )
    head.add_row("action", f"{m['action']['key']} ({m['action']['dim']} numbers; {space})")
    head.add_row("state", f"{m['state']['key']} ({m['state']['dim']} numbers)")
    if m["gripper"] is not None or m["height"] is not None:
        head.add_row("label channels", f"gripper {m['gripper']}, height {m['height']}")
    head.add_row("unmapped", ", ".join(s["unmapped"]) or "-")
    lab = s["labels"]
    if lab["feature"]:
        share = "-" if lab["interaction_share"] is None else f"{lab['interaction_share']:.1%}"
        coverage = (
            f"{lab['labelled_episodes']}/{s['episodes']} episodes, {lab['labelled_frames']}/{s['frames']} "
            f"frames; interaction share {share}"
        )
    else:
        coverage = "none (run `harmowam label` for the gate's labels)"
    head.add_row("gate labels", coverage)
    console.print(head)

    feats = Table(title="features")
    for col in ("feature", "dtype", "shape"):
        feats.add_column(col)
    for name, ft in s["features"].items():
        feats.add_row(name, ft["dtype"], str(tuple(ft["shape"])))
    console.print(feats)

    if s["stages"]:
        stages = Table(title="stage success recorded at collection")
        for col, justify in (("stage", "left"), ("episodes", "right"), ("success", "right")):
            stages.add_column(col, justify=justify)
        for st in s["stages"]:
            rate = "-" if st["success_rate"] is None else f"{st['success_rate']:.0%}"
            stages.add_row(st["name"], str(st["episodes"]), rate)
        console.print(stages)


def _scenes(scenes: dict) -> str:
    """{"none": [0, 1, 2, 5]} -> "none: 0-2, 5"; episodes without a recorded seed are counted."""
    lines = [f"{ood}: {seed_ranges(seeds)}" for ood, seeds in scenes.items() if ood != "unknown"]
    if scenes.get("unknown"):
        lines.append(f"{scenes['unknown']} episode(s) without a recorded seed")
    return "\n".join(lines) or "-"
