"""`harmowam demo`: the whole pipeline, small, on the simulator and the CPU.

collect -> label -> train-wm -> train-experts -> export -> eval (in-domain and position OOD), each phase the
same code as its own command, everything under one directory (default `demo/`).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.rule import Rule
from rich.table import Table

from harmowam_cli._bundle import policy_options
from harmowam_cli._common import console, user_errors
from harmowam_core.errors import HarmoWAMError

PHASES = ("collect", "label", "train-wm", "train-experts", "export", "eval")


def demo(
    task: Annotated[str, typer.Option(help="Recipe name or path.")] = "stack_cans",
    out: Annotated[Path, typer.Option(help="Directory for every artifact (data, runs, bundles, eval).")] = Path("demo"),
    episodes: Annotated[int, typer.Option(help="Demonstrations to collect.")] = 8,
    wm_steps: Annotated[int, typer.Option(help="World-model training steps.")] = 1000,
    experts_steps: Annotated[int, typer.Option(help="Expert training steps.")] = 1000,
    eval_episodes: Annotated[int, typer.Option(help="Evaluation episodes per protocol.")] = 3,
    max_steps: Annotated[
        int | None, typer.Option(help="Evaluation episode step limit (default: the recipe's).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete an existing --out directory first.")] = False,
) -> None:
    """Run the whole pipeline small on the simulated station (about 20 minutes on a 2-core CPU): collect,
    label, train the world model and the experts, export a bundle, evaluate in-domain and under position OOD."""
    run_demo(task, out, episodes, wm_steps, experts_steps, eval_episodes, max_steps, overwrite)


@user_errors
def run_demo(
    task: str,
    out: Path,
    episodes: int,
    wm_steps: int,
    experts_steps: int,
    eval_episodes: int,
    max_steps: int | None,
    overwrite: bool,
) -> None:
    from harmowam_cli.collect import run_collect
    from harmowam_cli.eval_cmd import print_table, run_eval
    from harmowam_cli.export import run_export
    from harmowam_cli.label import run_label
    from harmowam_cli.train_experts import run_train_experts
    from harmowam_cli.train_wm import run_train_wm
    from harmowam_core.recipes import load_recipe

    recipe = load_recipe(task)
    for name, value in (("--episodes", episodes), ("--wm-steps", wm_steps), ("--experts-steps", experts_steps)):
        if value < 1:
            raise HarmoWAMError(f"{name} must be at least 1, got {value}")
    if episodes < 3:
        raise HarmoWAMError(f"--episodes must be at least 3 (training needs held-out episodes), got {episodes}")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise HarmoWAMError(f"{out} already exists: pass --overwrite to replace it or choose another --out")
        shutil.rmtree(out)
    data, runs = out / "data" / recipe.name, out / "runs" / recipe.name
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def phase(name: str, detail: str):
        console.print(Rule(f"[bold]{PHASES.index(name) + 1}/{len(PHASES)} {name}[/] · {detail}"))
        timings[name] = time.perf_counter()

    def done(name: str) -> None:
        timings[name] = time.perf_counter() - timings[name]

    phase("collect", f"{episodes} scripted demonstrations")
    run_collect(task, episodes, "none", data, 0, "scripted", False, [])
    done("collect")
    phase("label", "transit / interaction frames for the gate")
    run_label(data, None, task, [], False)
    done("label")
    phase("train-wm", f"{wm_steps} steps")
    wm_run = run_train_wm(task, data, runs / "wm", False, wm_steps, [])
    done("train-wm")
    phase("train-experts", f"{experts_steps} steps")
    experts_run = run_train_experts(task, data, runs / "wm" / "model", runs / "experts", False, experts_steps, True, [])
    done("train-experts")
    phase("export", "a standalone bundle")
    bundle = run_export(runs, out / "bundles", None)
    done("export")
    phase("eval", f"in-domain and position OOD, {eval_episodes} episodes each, gate router and the scripted expert")
    report, paths = run_eval(
        bundle, "none,position", eval_episodes, ["gate"], True, 1000, max_steps,
        policy_options(None, None, False), True, out / "bundles",
        out / "eval",
    )  # fmt: skip
    done("eval")

    console.print(Rule("[bold]summary[/]"))
    summary = Table(title=f"harmowam demo: {recipe.name}, {time.perf_counter() - start:.0f} s in all")
    summary.add_column("phase")
    summary.add_column("seconds", justify="right")
    summary.add_column("result")
    ev = wm_run.evaluation
    results = {
        "collect": f"{episodes} episodes in {data}",
        "label": f"labels written into {data}",
        "train-wm": f"frames 7-13: {ev.late(ev.model_psnr):.2f} dB predicted vs {ev.late(ev.copy_psnr):.2f} dB copy"
        f" · {wm_run.model_dir}",
        "train-experts": f"gate accuracy {100 * experts_run.report.gate_accuracy:.1f}% · {experts_run.model_dir}"
        if experts_run.report.gate_accuracy is not None
        else str(experts_run.model_dir),
        "export": str(bundle),
        "eval": f"{paths['json']} · {paths['csv']} · {paths['png']}",
    }
    for name in PHASES:
        summary.add_row(name, f"{timings[name]:.0f}", results[name])
    console.print(summary)
    print_table(report)
    console.print(
        f"next: [bold]harmowam eval {bundle} --ood position --router gate --router predictive --router reactive[/]"
    )
