"""`harmowam demo`: the whole pipeline, small, on the simulator and the CPU.

collect -> label -> train-wm -> train-experts -> export -> eval (in-domain and position OOD), each phase the
same code as its own command, everything under one directory (default `demo/`): the pipeline of
`harmowam reproduce` (`harmowam_core.pipeline`), small, with the gate router only and no interaction episodes.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.rule import Rule

from harmowam_cli._common import SetOption, console, out_dir, user_errors
from harmowam_core.errors import HarmoWAMError
from harmowam_core.workspace import Workspace

# The demo's training steps, with its 20 pour_coke demonstrations: the smallest run measured to act within the
# demo's time (docs/learning.md, "`harmowam demo`: pour_coke, 20 demonstrations")
WM_STEPS, EXPERTS_STEPS = 1000, 1500


def demo(
    task: Annotated[str, typer.Option(help="Recipe name or path.")] = "pour_coke",
    out: Annotated[
        Path, typer.Option(help="Directory for every artifact (data, runs, bundles, eval).", parser=out_dir)
    ] = Path("demo"),
    episodes: Annotated[int, typer.Option(help="Demonstrations to collect (at least 3).", min=3)] = 20,
    wm_steps: Annotated[
        int | None,
        typer.Option(
            help=f"World-model training steps (default: {WM_STEPS}, or train_wm.steps where --set gives it).", min=1
        ),
    ] = None,
    experts_steps: Annotated[
        int | None,
        typer.Option(
            help=f"Expert training steps (default: {EXPERTS_STEPS}, or train_experts.steps where --set gives it).",
            min=1,
        ),
    ] = None,
    eval_episodes: Annotated[int, typer.Option(help="Evaluation episodes per protocol.", min=1)] = 3,
    max_steps: Annotated[
        int | None, typer.Option(help="Evaluation episode step limit (default: the recipe's).", min=1)
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete an existing --out directory first.")] = False,
    set_: SetOption = None,
) -> None:
    """Run the whole pipeline small on the simulated station (about 27 minutes on a 2-core CPU): collect,
    label, train the world model and the experts, export a bundle, evaluate in-domain and under position OOD."""
    run_demo(task, out, episodes, wm_steps, experts_steps, eval_episodes, max_steps, overwrite, set_ or [])


@user_errors
def run_demo(
    task: str,
    out: Path,
    episodes: int,
    wm_steps: int | None,
    experts_steps: int | None,
    eval_episodes: int,
    max_steps: int | None,
    overwrite: bool,
    overrides: list[str] | None = None,
) -> None:
    from harmowam_cli._pipeline import phase_table, run_pipeline
    from harmowam_cli.eval_cmd import print_table
    from harmowam_core.config import load_recipe
    from harmowam_core.evaluation.report import read_report
    from harmowam_core.pipeline import PipelinePlan, PipelineState

    overrides = overrides or []

    def steps(given: int | None, key: str, default: int) -> int | None:  # None: the recipe's (as --set made it)
        return given if given is not None else None if any(o.startswith(f"{key}=") for o in overrides) else default

    wm_steps = steps(wm_steps, "train_wm.steps", WM_STEPS)
    experts_steps = steps(experts_steps, "train_experts.steps", EXPERTS_STEPS)
    recipe = load_recipe(task, overrides)
    plan = PipelinePlan(
        task, out, episodes=episodes, wm_steps=wm_steps, experts_steps=experts_steps, routers=["gate"],
        eval_episodes=eval_episodes, max_steps=max_steps, interaction=False, overrides=overrides,
        data_dir=Workspace(out).data(recipe.name), runs_dir=Workspace(out).runs(recipe.name),
    )  # fmt: skip
    plan.check()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise HarmoWAMError(f"{out} already exists: pass --overwrite to replace it or choose another --out")
        shutil.rmtree(out)
    start = time.perf_counter()
    state = PipelineState(None)  # the demo starts afresh every time: nothing to resume
    results = run_pipeline(plan, state)

    console.print(Rule("[bold]summary[/]"))
    wm, experts, bundle = results["train-wm"], results["train-experts"], results["export"]["bundle"]
    gate = experts.get("gate_accuracy")
    summary = {
        "collect": f"{results['collect']['episodes']} episodes in {plan.data}",
        "label": f"labels written into {plan.data}",
        "train-wm": f"frames 7-13: {wm['late_model_psnr']:.2f} dB predicted vs {wm['late_copy_psnr']:.2f} dB copy"
        f" · {wm['model']}",
        "train-experts": (f"gate accuracy {100 * gate:.1f}% · " if gate is not None else "") + experts["model"],
        "export": bundle,
        "eval": " · ".join(results["eval"][k] for k in ("json", "csv", "png")),
    }
    title = f"harmowam demo: {recipe.name}, {time.perf_counter() - start:.0f} s in all"
    console.print(phase_table(title, state, summary))
    print_table(read_report(plan.eval_dir))
    console.print(
        f"next: [bold]harmowam eval {bundle} --ood position --router gate --router predictive --router reactive[/]"
    )
