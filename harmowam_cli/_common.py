"""What every subcommand shares: consoles, one-line user errors with exit code 2, progress bars."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from harmowam_core.errors import HarmoWAMError, ParameterError
from harmowam_core.seeds import seed_ranges  # noqa: F401 - the commands' summaries use it from here

# Under `accelerate launch` / torchrun only the main process (RANK 0) reports; errors still come from any.
console = Console(quiet=os.environ.get("RANK", "0") != "0")
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe value: dotted.key=value (repeatable).", metavar="KEY=VALUE"),
]

LogWithOption = Annotated[
    str | None,
    typer.Option(
        "--log-with",
        help="Experiment tracker(s) for the training curves, as accelerate's log_with: tensorboard, wandb, "
        "mlflow, ... (comma-separated for several; default: none). Logs land in <out>/logs.",
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        help="Simulator processes running episodes in parallel (default: the cores this process may use, capped "
        "by the episodes). Results are the same for any number.",
        show_default=False,
    ),
]
ShardOption = Annotated[
    str | None,
    typer.Option(
        help="Run only share i of N (i from 0, e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); merge the "
        "shards' outputs afterwards.",
        metavar="i/N",
    ),
]


def fail(message: str) -> typer.Exit:
    """Print a one-line error and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    return typer.Exit(2)


def user_errors(fn: F) -> F:
    """Turn HarmoWAMError (a user's mistake) into one line on stderr and exit code 2. Bugs still raise."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ParameterError as err:  # the option it came from: --max-steps, not max_steps
            raise fail(f"--{err.parameter.replace('_', '-')}: {err.problem}") from None
        except HarmoWAMError as err:
            raise fail(str(err)) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def progress_bar(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=transient,
    )


def quiet_libraries() -> None:
    """Silence diffusers' and transformers' own tqdm bars (loading weights, writing shards): the rich progress
    of each command says what is happening."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
