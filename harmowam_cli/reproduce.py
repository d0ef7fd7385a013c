"""`harmowam reproduce TASK`: the simulator version of the paper's protocol, end to end, resumable phase by phase
(`harmowam_core.pipeline`); everything, and `report.md`, under one directory (default `reproduce/<task>`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.rule import Rule
from rich.table import Table

from harmowam_cli._bundle import MaxStepsOption
from harmowam_cli._common import SetOption, console, out_dir, user_errors
from harmowam_core.pipeline import PHASES

WorkersOption = Annotated[
    int | None,
    typer.Option(
        help="Simulator processes for collection and evaluation (default: the cores this process may use). "
        "Results are the same for any number.",
        show_default=False,
        min=1,
    ),
]


def reproduce(
    task: Annotated[str, typer.Argument(help="Recipe name or path (e.g. stack_cans, pour_coke).")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Directory for every artifact, the state and report.md (default: reproduce/<task>).", parser=out_dir
        ),
    ] = None,
    episodes: Annotated[int, typer.Option(help="Scripted demonstrations to collect (at least 3).", min=3)] = 100,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Start from this dataset of the task (e.g. one `harmowam collect` wrote) instead of collecting into "
            "--out: only the episodes it lacks up to --episodes are collected into it, the labels are written into "
            "it, and nothing removes it.",
            show_default=False,
        ),
    ] = None,
    workers: WorkersOption = None,
    eval_episodes: Annotated[int, typer.Option(help="Evaluation episodes per row (router x protocol).", min=1)] = 20,
    max_steps: MaxStepsOption = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Evaluate under all three OOD protocols (background, position, objects) and with the average and "
            "keyframe-average routers too (paper Fig. 5).",
        ),
    ] = False,
    budget_minutes: Annotated[
        float | None,
        typer.Option(
            help="Cap the training time: split between the world model and the experts in proportion to their "
            "steps; a stage that reaches its cap stops, saves and says how many steps it did.",
            show_default=False,
        ),
    ] = None,
    restart_from: Annotated[
        str | None,
        typer.Option(help="Redo this phase and every later one: " + " | ".join(PHASES) + ".", metavar="PHASE"),
    ] = None,
    videos: Annotated[bool, typer.Option("--videos/--no-videos", help="Record every evaluation episode.")] = True,
    set_: SetOption = None,
) -> None:
    """Run the paper's protocol in the simulator: collect scripted demonstrations, label them, train the world
    model and the experts, export a bundle, evaluate stage-wise success in-domain and under position OOD with the
    gate, predictive and reactive routers and the scripted upper bound, and measure Table 1's transit /
    interaction split of the two experts (appendix D.2). Writes report.md in --out.

    Re-running the same command skips finished phases and continues an interrupted one.
    Changed settings are refused unless --restart-from PHASE names the first phase to redo.
    A few hours at the defaults on a 2-core CPU (see the README); --budget-minutes caps the training."""
    run_reproduce(
        task,
        out,
        episodes,
        workers,
        eval_episodes,
        max_steps,
        full,
        budget_minutes,
        restart_from,
        videos,
        set_ or [],
        data,
    )


def _command(task: str, **options) -> str:
    """The command line as a user would type it (for the report)."""
    parts = ["harmowam reproduce", task]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif value is False:
            parts.append(f"--no-{name}")
        elif isinstance(value, list):
            parts += [f"{flag} {v}" for v in value]
        elif value is not None:
            parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return " ".join(parts)


@user_errors
def run_reproduce(
    task: str,
    out: Path | None,
    episodes: int,
    workers: int | None,
    eval_episodes: int,
    max_steps: int | None,
    full: bool,
    budget_minutes: float | None,
    restart_from: str | None,
    videos: bool,
    overrides: list[str],
    data: Path | None = None,
):
    from harmowam_cli._pipeline import minutes, phase_table, run_pipeline
    from harmowam_cli.eval_cmd import print_table
    from harmowam_core.evaluation.report import PROTOCOL_NAMES, read_report
    from harmowam_core.pipeline import (
        SPLIT_NAMES,
        PipelinePlan,
        PipelineState,
        check_out_dir,
        phase_result,
        split_cells,
        table1,
        write_report,
    )

    plan = PipelinePlan.reproduce(
        task, out, full, episodes=episodes, workers=workers, eval_episodes=eval_episodes, max_steps=max_steps,
        budget_minutes=budget_minutes, videos=videos, overrides=overrides, data_dir=data,
        existing_data=data is not None,
    )  # fmt: skip
    plan.command = _command(
        task, out=str(out) if out is not None else None, data=str(data) if data is not None else None,
        episodes=episodes if episodes != 100 else None,
        eval_episodes=eval_episodes if eval_episodes != 20 else None, max_steps=max_steps, full=full or None,
        budget_minutes=budget_minutes, videos=None if videos else False, set=overrides or None,
    )  # fmt: skip
    recipe = plan.check()
    check_out_dir(plan)
    state = PipelineState.open(plan.state_path)
    what = "continuing" if state.phases else "starting"

    def banner() -> None:
        console.print(
            f"{what} the reproduction of [bold]{recipe.name}[/] in [bold]{plan.out}[/]: {plan.episodes} "
            f"demonstrations, {', '.join(plan.routers)} × {', '.join(plan.protocols)} × {plan.eval_episodes} "
            "episodes" + (f", training capped at {budget_minutes:g} min" if budget_minutes else "")
        )

    run_pipeline(plan, state, restart_from, on_begin=banner, on_done=lambda phase, record: write_report(plan, state))
    report_path = write_report(plan, state)

    console.print(Rule("[bold]summary[/]"))
    total = sum(r.get("seconds", 0.0) for r in state.phases.values())
    results = {name: phase_result(name, record) for name, record in state.phases.items()}
    console.print(phase_table(f"harmowam reproduce {recipe.name}: {minutes(total)} in all", state, results))
    print_table(read_report(plan.eval_dir))
    rows = table1(plan, state)
    if rows == []:
        console.print(f"{recipe.name} defines no first transit target: no transit/interaction split (Table 1)")
    elif rows:
        table = Table(title="transit / interaction (paper Table 1 form, appendix D.2)")
        for column, justify in (
            ("expert", "left"),
            ("protocol", "left"),
            ("transit", "right"),
            ("interaction", "right"),
        ):
            table.add_column(column, justify=justify)
        for row in rows:
            table.add_row(SPLIT_NAMES.get(row.actor, row.actor), PROTOCOL_NAMES[row.protocol], *split_cells(row))
        console.print(table)
    console.print(f"report: [bold]{report_path}[/] (plot {plan.eval_dir / 'success.png'})")
    return state
