"""`harmowam recipe show|list`: validate a recipe and print it resolved; list the shipped tasks."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.syntax import Syntax
from rich.table import Table

from harmowam_cli._common import SetOption, console, user_errors
from harmowam_core.config import dump_recipe, load_recipe, recipe_names

app = typer.Typer(
    help="Task recipes: show one validated and resolved (show), list the shipped ones (list).", no_args_is_help=True
)


@app.command("show")
@user_errors
def show(
    recipe: Annotated[str, typer.Argument(help="Recipe file or task name (e.g. stack_cans).")],
    set_: SetOption = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Print the preset name and overrides, not the resolved model.")
    ] = False,
) -> None:
    """Validate RECIPE and print it with the model preset and every --set override applied: valid YAML (a
    recipe file) when stdout is a file or a pipe, highlighted on a terminal."""
    r = load_recipe(recipe, overrides=set_ or [])
    text = dump_recipe(r, resolved=not raw)
    if not console.is_terminal:  # printed as is: rich would wrap long lines at its width and break the YAML
        sys.stdout.write(f"# {r.source} (valid)\n{text}")
        return
    console.print(f"[dim]# {r.source} (valid)[/]", soft_wrap=True)
    console.print(Syntax(text, "yaml", background_color="default", word_wrap=True))


@app.command("list")
@user_errors
def list_() -> None:
    """List the shipped task recipes."""
    table = Table(title="HarmoWAM task recipes")
    for col in ("task", "arms", "stages", "cameras", "instruction"):
        table.add_column(col)
    for name in recipe_names():
        r = load_recipe(name)
        table.add_row(
            name,
            r.arms,
            ", ".join(s.name for s in r.stages),
            ", ".join(c.name for c in r.cameras),
            r.instruction,
        )
    console.print(table)
