"""`harmowam doctor`: is this machine ready to drive the real station?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from harmowam_cli._common import console, user_errors


def doctor(
    station: Annotated[
        Path | None,
        typer.Option(
            help="Station configuration (default: ~/.config/harmowam/station.yaml, if present).", metavar="FILE"
        ),
    ] = None,
) -> None:
    """Check the real station: RealSense serials, libusb, the real-time kernel, the `real` packages and whether
    each configured arm's FCI host answers. One line per check; exit code 1 when any fails."""
    run_doctor(station)


@user_errors
def run_doctor(station_path: Path | None) -> None:
    from harmowam_core.envs.real.config import DEFAULT_PATH, load_station_config
    from harmowam_core.envs.real.doctor import run_checks

    station = None
    if station_path is not None or DEFAULT_PATH.expanduser().is_file():
        station = load_station_config(station_path)
        console.print(f"station: [bold]{station.source}[/]")
    else:
        console.print(f"no station file at {DEFAULT_PATH}: arms are not checked (pass --station)")
    checks = run_checks(station)
    for check in checks:
        mark = "[green]ok[/]  " if check.ok else "[red]FAIL[/]"
        console.print(f"{mark} {check.name}: {escape(check.detail)}", highlight=False, soft_wrap=True)
    failed = [c for c in checks if not c.ok]
    console.print(f"{len(checks) - len(failed)}/{len(checks)} checks passed")
    if failed:
        raise typer.Exit(1)
