"""`harmowam train-wm RECIPE`: stage 1, the video world model, trained by conditional flow matching."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from harmowam_cli._common import (
    LogWithOption,
    SetOption,
    console,
    out_dir,
    progress_bar,
    quiet_libraries,
    user_errors,
)
from harmowam_core.config import load_recipe
from harmowam_core.workspace import DEFAULT


def train_wm(
    recipe: Annotated[str, typer.Argument(help="Recipe name or path (e.g. stack_cans, recipes/stack_cans.yaml).")],
    data: Annotated[Path | None, typer.Option(help="Dataset directory (default: data/<task>).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/<task>/wm).", parser=out_dir)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")] = False,
    max_steps: Annotated[
        int | None,
        typer.Option(
            help="Stop after this many steps, with a checkpoint (a smoke run, or a run continued later with "
            "--resume); the learning-rate schedule still spans the recipe's train_wm.steps.",
            min=1,
        ),
    ] = None,
    log_with: LogWithOption = None,
    set_: SetOption = None,
) -> None:
    """Train the world model (stage 1) on the recipe's front/global camera; previews and a held-out PSNR
    evaluation against the copy-the-current-frame baseline land in the run directory."""
    run_train_wm(recipe, data, out, resume, max_steps, set_ or [], log_with=log_with)


@user_errors
def run_train_wm(
    recipe_name: str,
    data: Path | None,
    out: Path | None,
    resume: bool,
    max_steps: int | None,
    overrides: list[str],
    log_with: str | None = None,
) -> None:
    recipe = load_recipe(recipe_name, overrides)  # a bad recipe fails before torch is imported

    from harmowam_core.training.world_model import WorldModelTrainer

    quiet_libraries()
    data = data or DEFAULT.data(recipe.name)
    out = out or DEFAULT.wm_run(recipe.name)
    trainer = WorldModelTrainer(recipe, data, out, resume=resume, max_steps=max_steps, log_with=log_with)
    console.print(
        f"training the [bold]{recipe.model.preset}[/] world model on [bold]{data}[/] ({trainer.camera} camera, "
        f"{len(trainer.train_episodes)} episodes, {len(trainer.held_out)} held out; {trainer.steps} steps of batch "
        f"{recipe.train_wm.batch_size}) into [bold]{out}[/]"
    )
    with progress_bar() as bar:
        tasks: dict[str, int] = {}

        def on_progress(phase: str, done: int, total: int, status: str) -> None:
            if phase == "preview":
                console.print(f"step {done}: preview {out / 'previews' / status}")
                return
            label = {"frames": "decoding", "evaluate": "evaluating"}[phase]
            if phase not in tasks:
                tasks[phase] = bar.add_task(label, total=total, status="")
            bar.update(tasks[phase], completed=done, status=status)

        def on_log(log) -> None:
            if "train" not in tasks:
                tasks["train"] = bar.add_task("training", total=log.total, completed=log.step - 1, status="")
            bar.update(
                tasks["train"],
                completed=log.step,
                status=f"loss {log.losses['loss']:.4f} · {log.samples_per_second:.1f} samples/s",
            )

        run = trainer.run(on_log=on_log, on_progress=on_progress)
    if run.evaluation is None:  # not the main process of a multi-process launch: it reports
        return run
    if run.resumed_from:
        console.print(f"resumed at step {run.resumed_from}")
    if run.steps < trainer.steps:
        console.print(
            f"[yellow]stopped by the time cap[/] (train_wm.max_minutes {recipe.train_wm.max_minutes:g}): "
            f"{run.steps} of {trainer.steps} steps, saved"
        )
    ev = run.evaluation
    table = Table(
        title=f"held-out PSNR (dB), episodes {run.held_out_episodes}, {ev.clips} clips, "
        f"{ev.denoising_steps} denoising steps"
    )
    table.add_column("frame", justify="right")
    table.add_column("predicted", justify="right")
    table.add_column("copy current", justify="right")
    table.add_column("moving px: predicted", justify="right")
    table.add_column("copy", justify="right")
    table.add_column("share", justify="right")

    def db(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    rows = zip(ev.model_psnr, ev.copy_psnr, ev.moving_model_psnr, ev.moving_copy_psnr, ev.moving_share, strict=True)
    for k, (m, c, mm, mc, share) in enumerate(rows):
        style = "bold" if m > c else ""
        table.add_row(str(k + 2), f"{m:.2f}", f"{c:.2f}", db(mm), db(mc), f"{100 * share:.1f}%", style=style)
    late = [ev.late(x) for x in (ev.model_psnr, ev.copy_psnr, ev.moving_model_psnr, ev.moving_copy_psnr)]
    table.add_row("7-13", *map(db, late), "", end_section=True)
    console.print(table)
    console.print(
        f"{run.steps} steps · model {run.model_dir} · previews {out / 'previews'} · "
        f"frames 7-13: {ev.late_gain:+.2f} dB over copying the current frame"
    )
    return run
