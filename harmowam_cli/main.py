"""The `harmowam` command: one typer app, one module per subcommand (thin: parse, call core, print)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from harmowam_cli import collect as collect_cmd
from harmowam_cli import dataset as dataset_cmd
from harmowam_cli import demo as demo_cmd
from harmowam_cli import deploy as deploy_cmd
from harmowam_cli import doctor as doctor_cmd
from harmowam_cli import eval_cmd
from harmowam_cli import export as export_cmd
from harmowam_cli import info as info_cmd
from harmowam_cli import label as label_cmd
from harmowam_cli import recipe as recipe_cmd
from harmowam_cli import reproduce as reproduce_cmd
from harmowam_cli import train_experts as train_experts_cmd
from harmowam_cli import train_wm as train_wm_cmd
from harmowam_cli._common import OneLineGroup, console

app = typer.Typer(
    name="harmowam",
    help="HarmoWAM: a world model with a predictive and a reactive action expert, switched by a "
    "process-adaptive gate. Record demonstrations, label them, train, deploy and evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    cls=OneLineGroup,  # a usage error (unknown option, bad number) is one line and exit code 2, as every mistake
)
app.add_typer(recipe_cmd.app, name="recipe")
app.command("collect")(collect_cmd.collect)
app.command("label")(label_cmd.label)
app.command("info")(info_cmd.info)
app.add_typer(dataset_cmd.app, name="dataset")
app.command("train-wm")(train_wm_cmd.train_wm)
app.command("train-experts")(train_experts_cmd.train_experts)
app.command("export")(export_cmd.export)
app.command("deploy")(deploy_cmd.deploy)
app.command("eval", cls=eval_cmd.EvalCommand)(eval_cmd.evaluate)
app.command("demo")(demo_cmd.demo)
app.command("reproduce")(reproduce_cmd.reproduce)
app.command("doctor")(doctor_cmd.doctor)


def _version(value: bool) -> None:
    if value:
        try:
            console.print(f"harmowam {version('harmowam')}")
        except PackageNotFoundError:
            console.print("harmowam (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    _version_flag: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """HarmoWAM toolkit."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
