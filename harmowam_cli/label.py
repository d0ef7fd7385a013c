"""`harmowam label DATASET`: transit / interaction labels for the gate (paper appendix D.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from harmowam_cli._common import SetOption, console, progress_bar, user_errors
from harmowam_core.config import GateSpec, load_recipe, recipe_from_data, sections_from_overrides
from harmowam_core.data.format import HARMOWAM_META_PATH, DataMapping
from harmowam_core.data.labels import LabelSettings, check_labelling, label_dataset
from harmowam_core.data.meta import read_harmowam_meta
from harmowam_core.data.reader import resolve_dataset


def _gate_settings(dataset: Path, recipe: str | None, overrides: list[str]) -> tuple[GateSpec, DataMapping, str]:
    """The recipe's gate and data sections: from --recipe, else the recipe recorded in the dataset, else defaults
    (with --set gate.* / data.* applied: a dataset LeRobot wrote records no recipe)."""
    if recipe:
        r = load_recipe(recipe, overrides)
        return r.gate, r.data_mapping(), r.source
    meta_path = dataset / HARMOWAM_META_PATH
    meta = read_harmowam_meta(dataset)
    if meta.get("recipe"):
        r = recipe_from_data(meta["recipe"], str(meta_path), overrides)
        return r.gate, r.data_mapping(), f"{meta_path} (recorded recipe)"
    if meta.get("task"):
        r = load_recipe(meta["task"], overrides)
        return r.gate, r.data_mapping(), r.source
    gate, data = sections_from_overrides(overrides)
    return (
        gate,
        data.to_mapping(),
        "defaults" + (" and --set" if overrides else "") + " (the dataset records no recipe)",
    )


def label(
    dataset: Annotated[
        str, typer.Argument(help="Dataset directory (LeRobot v3.0 layout), or owner/name in the local LeRobot cache.")
    ],
    window: Annotated[
        int | None, typer.Option(help="Frames either side of a keyframe labelled interaction.", min=0)
    ] = None,
    recipe: Annotated[
        str | None, typer.Option(help="Recipe whose gate section to use (default: the dataset's).")
    ] = None,
    set_: SetOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Compute and print labels, write nothing.")] = False,
) -> None:
    """Label each frame transit (0) or interaction (1) from gripper transitions and end-effector heights."""
    run_label(dataset, window, recipe, set_ or [], dry_run)


@user_errors
def run_label(dataset: str, window: int | None, recipe: str | None, overrides: list[str], dry_run: bool) -> None:
    dataset = resolve_dataset(dataset)
    gate, mapping, source = _gate_settings(dataset, recipe, overrides)
    settings = LabelSettings(
        window=gate.window if window is None else window,
        height_thresholds=tuple(gate.height_thresholds),
        gripper_closed_above=gate.gripper_closed_above,
    )
    gripper, height = check_labelling(dataset, settings, mapping)  # fails before the banner
    channels = f", gripper channel(s) {gripper} of {mapping.action}, height channel(s) {height or 'none'}"
    console.print(
        f"labelling [bold]{dataset}[/] with window ±{settings.window}, height thresholds "
        f"{list(settings.height_thresholds) or 'none'}{channels} (from {source})"
    )
    with progress_bar(transient=True) as bar:
        task = bar.add_task("episodes", total=None, status="")
        results = label_dataset(
            dataset,
            settings,
            dry_run=dry_run,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            mapping=mapping,
        )
    table = Table(title=f"gate labels{' (dry run: nothing written)' if dry_run else ''}")
    for col, justify in (
        ("episode", "right"),
        ("frames", "right"),
        ("keyframes", "left"),
        ("interaction", "right"),
    ):
        table.add_column(col, justify=justify)
    for res in results:
        keys = ", ".join(map(str, res.keyframes[:8])) + (" …" if len(res.keyframes) > 8 else "")
        table.add_row(
            str(res.episode_index),
            str(res.frames),
            f"{len(res.keyframes)}: {keys}" if keys else "0",
            f"{res.interaction_share:.1%}",
        )
    frames = sum(r.frames for r in results)
    share = sum(int(r.labels.sum()) for r in results) / max(frames, 1)
    table.add_section()
    table.add_row("all", str(frames), str(sum(len(r.keyframes) for r in results)), f"{share:.1%}")
    console.print(table)
    if not dry_run:
        console.print(f"[green]wrote[/] the `interaction` feature and keyframes into {dataset}")
