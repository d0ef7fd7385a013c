"""`harmowam export RUN_DIR`: a standalone policy bundle from a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harmowam_cli._common import console, out_dir, progress_bar, quiet_libraries, user_errors
from harmowam_core.workspace import DEFAULT


def export(
    run_dir: Annotated[
        Path, typer.Argument(help="The task's run directory (runs/<task>) or its stage-2 run (runs/<task>/experts).")
    ],
    bundles: Annotated[Path, typer.Option(help="Where bundles are kept.", parser=out_dir)] = DEFAULT.bundles,
    name: Annotated[str | None, typer.Option(help="Bundle name (default: <task>-<date>-<time>).")] = None,
    snapshot: Annotated[
        int | None,
        typer.Option(
            help="Export the experts of this training step (kept with train_experts.snapshot_every) instead of the "
            "final ones: to choose the evaluated model by closed-loop success.",
            show_default=False,
            min=1,
        ),
    ] = None,
) -> None:
    """Package the world model, both experts, the gate, the normalisation, the recipe and the library versions
    into bundles/<name>/, which runs without the dataset or the run directory."""
    run_export(run_dir, bundles, name, snapshot)


@user_errors
def run_export(run_dir: Path, bundles: Path, name: str | None, snapshot: int | None = None) -> Path:
    from harmowam_core.policy.bundle import export_bundle, read_bundle

    quiet_libraries()
    with progress_bar(transient=True) as bar:
        bar.add_task(f"exporting {run_dir}", total=None, status="")
        out = export_bundle(run_dir, bundles, name, snapshot)
    meta = read_bundle(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    gate = (meta["reports"].get("experts") or {}).get("gate_accuracy")
    gate_text = f", held-out gate accuracy {100 * gate:.1f}%" if isinstance(gate, float) else ""
    console.print(
        f"exported [bold]{meta['task']}[/] ({meta['arms']}-arm{gate_text}) to [bold]{out}[/] ({size / 2**20:.1f} MiB)"
    )
    return out
