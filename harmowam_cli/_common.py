"""What every subcommand shares: consoles, one-line user errors with exit code 2, progress bars."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

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
from typer.core import TyperCommand, TyperGroup

try:  # a typer that vendors Click (typer._click): every usage error derives from typer.TyperException
    from typer import TyperException as _UsageError
except ImportError:  # an older typer (pyproject allows >= 0.12) raises Click's own exceptions
    from click import ClickException as _UsageError

from harmowam_core.errors import HarmoWAMError, ParameterError, is_disk_full
from harmowam_core.seeds import MAX_SEED, seed_ranges  # noqa: F401 - the commands use them from here

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
        min=1,
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
    """Print a one-line error and return the exit to raise (code 2). A message that spans lines (one quoting a
    library's error) is joined into one."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    err_console.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True, highlight=False)
    return typer.Exit(2)


def _usage_exit(err: _UsageError) -> typer.Exit:
    """A usage error of the command line (unknown option, missing argument, a value its type or range refuses)
    as one line naming the command, instead of typer's usage block and boxed message; exit code 2 like every
    user error (Click gives some of its errors, a plain ClickException or FileError, exit code 1)."""
    ctx = getattr(err, "ctx", None)
    where = f"{ctx.command_path}: " if ctx is not None else ""
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    return fail(f"{where}{err.format_message()}{hint}")


@contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    """Usage errors raised inside as `_usage_exit`; the help a group prints when called bare passes through."""
    try:
        yield
    except _UsageError as err:
        if type(err).__name__ == "NoArgsIsHelpError":
            raise
        raise _usage_exit(err) from None


class _OneLineUsageErrors:
    """Typer's command classes with the usage errors raised while parsing (and invoking subcommands) printed as
    one `error:` line, exit code 2, like every other mistake a user can make. `harmowam --help` and a group
    called without arguments still print their help."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        with _one_line_usage_errors():
            return super().make_context(info_name, args, parent, **extra)  # type: ignore[misc]

    def invoke(self, ctx: Any) -> Any:
        with _one_line_usage_errors():
            return super().invoke(ctx)  # type: ignore[misc]


class OneLineGroup(_OneLineUsageErrors, TyperGroup):
    """The `harmowam` app's group class (`typer.Typer(cls=OneLineGroup)`)."""


class OneLineCommand(_OneLineUsageErrors, TyperCommand):
    """A command invoked on its own (`eval merge`), with one-line usage errors."""


def out_dir(value: str) -> Path:
    """An output directory option's value: refused (one line, exit code 2) where it, or a folder above it, is an
    existing file, before anything is written. Use as `typer.Option(parser=out_dir)`."""
    path = Path(value)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise typer.BadParameter(f"{part} is a file, not a directory; choose a directory")
    return path


def user_errors(fn: F) -> F:
    """Turn HarmoWAMError (a user's mistake) and a full disk (`errors.is_disk_full`) into one line on stderr and
    exit code 2. Bugs still raise."""

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
        except Exception as err:
            if not is_disk_full(err):
                raise
            filename = getattr(err, "filename", None)
            where = f" (writing {filename})" if filename else ""
            raise fail(
                f"no space left on the device{where}: free some space or write elsewhere, then run again; what was "
                "saved before is kept"
            ) from None

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
    """Silence diffusers' and transformers' own tqdm bars (`evaluation.runner.quiet_libraries`)."""
    from harmowam_core.evaluation.runner import quiet_libraries as quiet

    quiet()
