"""`harmowam train-experts RECIPE`: stage 2, the predictive and reactive experts and the gate, world model frozen."""

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

PHASES = {"imagine": "imagining (world model, cached)", "images": "decoding cameras", "evaluate": "evaluating"}


def train_experts(
    recipe: Annotated[str, typer.Argument(help="Recipe name or path (e.g. stack_cans, recipes/stack_cans.yaml).")],
    data: Annotated[Path | None, typer.Option(help="Labelled dataset directory (default: data/<task>).")] = None,
    wm: Annotated[
        Path | None,
        typer.Option(
            help="Trained world model: train-wm's run directory (runs/<task>/wm), the task's (runs/<task>) or the "
            "model directory inside (default: runs/<task>/wm)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default: runs/<task>/experts).", parser=out_dir)
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")] = False,
    max_steps: Annotated[
        int | None,
        typer.Option(
            help="Stop after this many steps, with a checkpoint (a smoke run, or a run continued later with "
            "--resume); the learning-rate schedule still spans the recipe's train_experts.steps.",
            min=1,
        ),
    ] = None,
    without_wm_latents: Annotated[
        bool,
        typer.Option(
            "--without-wm-latents",
            help="The latent ablation: neither expert (nor the gate) reads the world model's tokens.",
        ),
    ] = False,
    reactive_on_real_frames: Annotated[
        bool,
        typer.Option(
            "--reactive-on-real-frames",
            help="Train the reactive expert on the real future frames instead of the imagined ones.",
        ),
    ] = False,
    log_with: LogWithOption = None,
    set_: SetOption = None,
) -> None:
    """Train the predictive expert, the reactive expert and the gate (stage 2) on the frozen world model; a
    held-out report (gate accuracy, each expert's action error on transit and interaction frames) closes."""
    overrides = list(set_ or [])
    if reactive_on_real_frames:
        overrides.append("train_experts.reactive_on_real_frames=true")
    run_train_experts(recipe, data, wm, out, resume, max_steps, not without_wm_latents, overrides, log_with=log_with)


@user_errors
def run_train_experts(
    recipe_name: str,
    data: Path | None,
    wm: Path | None,
    out: Path | None,
    resume: bool,
    max_steps: int | None,
    use_wm_latents: bool,
    overrides: list[str],
    log_with: str | None = None,
) -> None:
    recipe = load_recipe(recipe_name, overrides)  # a bad recipe fails before torch is imported

    from harmowam_core.training.experts import INPUTS_FILE, ExpertsTrainer

    quiet_libraries()
    data = data or DEFAULT.data(recipe.name)
    wm = wm or DEFAULT.wm_run(recipe.name)  # the model inside it: world_model_dir
    out = out or DEFAULT.experts_run(recipe.name)
    trainer = ExpertsTrainer(
        recipe, data, wm, out, resume=resume, max_steps=max_steps, use_wm_latents=use_wm_latents, log_with=log_with
    )
    spec = recipe.train_experts
    variant = "" if use_wm_latents else ", without world-model latents"
    frames = "real" if spec.reactive_on_real_frames else "imagined"
    console.print(
        f"training the [bold]{recipe.model.preset}[/] experts and gate on [bold]{data}[/] with the world model "
        f"[bold]{trainer.wm_dir}[/] ({len(trainer.train_episodes)} episodes, {len(trainer.held_out)} held out; "
        f"{trainer.steps} steps of batch {spec.batch_size}; reactive expert on {frames} frames{variant}) into "
        f"[bold]{out}[/]"
    )
    with progress_bar() as bar:
        tasks: dict[str, int] = {}

        def on_progress(phase: str, done: int, total: int, status: str) -> None:
            if phase not in tasks or bar.tasks[tasks[phase]].total != total:
                tasks[phase] = bar.add_task(PHASES[phase], total=total, status="")
            bar.update(tasks[phase], completed=done, status=status)

        def on_log(log) -> None:
            if "train" not in tasks:
                tasks["train"] = bar.add_task("training", total=log.total, completed=log.step - 1, status="")
            losses = log.losses
            gripper = f"gripper {losses['gripper']:.3f} · " if "gripper" in losses else ""
            bar.update(
                tasks["train"],
                completed=log.step,
                status=f"pred {losses['pred']:.3f} · react {losses['react']:.3f} · gate {losses['gate']:.3f} · "
                f"{gripper}{log.samples_per_second:.1f} samples/s",
            )

        run = trainer.run(on_log=on_log, on_progress=on_progress)
    if run.report is None:  # not the main process of a multi-process launch
        return run
    if run.resumed_from:
        console.print(f"resumed at step {run.resumed_from}")
    if run.steps < trainer.steps:
        console.print(
            f"[yellow]stopped by the time cap[/] (train_experts.max_minutes {recipe.train_experts.max_minutes:g}): "
            f"{run.steps} of {trainer.steps} steps, saved"
        )
    print_report(run.report)
    console.print(
        f"{run.steps} steps · model {run.model_dir} · report {run.out / 'report.json'}"
        f" · what the experts read {run.out / INPUTS_FILE}"
    )
    return run


def print_report(report) -> None:
    counts = report.counts
    table = Table(
        title=f"held-out action error (mean |error|, standardised units), episodes {report.episodes}, "
        f"{report.frames} frames"
    )
    table.add_column("expert")
    for group in ("transit", "interaction", "all"):
        table.add_column(f"{group} ({counts.get(group, 0)})", justify="right")
    for name, row in report.errors.items():
        label = "routed by the gate" if name == "routed" else name
        table.add_row(label, *("-" if row[g] is None else f"{row[g]:.3f}" for g in ("transit", "interaction", "all")))
    console.print(table)
    if report.gate_accuracy is None:
        console.print("gate: no labelled held-out frames to score")
    else:
        console.print(
            f"gate frame accuracy: [bold]{100 * report.gate_accuracy:.2f}%[/] (threshold {report.gate_threshold})"
        )
