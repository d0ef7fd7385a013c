"""`harmowam dataset merge OUT IN [IN ...]`: operations on whole datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harmowam_cli._common import console, out_dir, progress_bar, user_errors
from harmowam_core.data.merge import merge_datasets

app = typer.Typer(help="Whole-dataset operations: merge shards into one dataset.", no_args_is_help=True)


@app.command("merge")
def merge(
    out: Annotated[
        Path,
        typer.Argument(metavar="OUT", help="The new dataset directory (must not exist, or be empty).", parser=out_dir),
    ],
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(metavar="IN", help="Datasets to merge, in order (e.g. shards of one collection)."),
    ] = None,
    drop_labels: Annotated[
        bool,
        typer.Option(
            "--drop-labels", help="Merge inputs labelled differently (or some not at all) without gate labels."
        ),
    ] = False,
    copy: Annotated[bool, typer.Option("--copy", help="Copy videos instead of hard-linking them.")] = False,
) -> None:
    """Merge datasets of one task, recorded with the same recipe, into the new dataset OUT (inputs unchanged)."""
    run_merge(out, inputs or [], drop_labels, copy)


@user_errors
def run_merge(out: Path, inputs: list[Path], drop_labels: bool, copy: bool) -> None:
    bar = progress_bar(transient=True)
    task = bar.add_task("episodes", total=None, status="")
    started = False

    def progress(done: int, total: int) -> None:
        nonlocal started
        if not started:  # only once the inputs passed every check, so that a refusal stays one line
            bar.start()
            started = True
        bar.update(task, completed=done, total=total)

    try:
        result = merge_datasets(out, inputs, drop_labels=drop_labels, link=not copy, progress=progress)
    finally:
        if started:
            bar.stop()
    labels = {"kept": ", gate labels kept", "dropped": ", gate labels dropped", "none": ""}[result.labels]
    console.print(
        f"[green]merged[/] {len(result.inputs)} dataset(s) into [bold]{result.out}[/]: {result.episodes} episodes, "
        f"{result.frames} frames, {len(result.tasks)} instruction(s){labels}",
        soft_wrap=True,
    )
