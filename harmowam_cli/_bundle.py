"""What `deploy` and `eval` share (which bundle to run, the policy's run-time options) and, with `collect`,
the station options (`--backend`, `--station`, `--dry-run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harmowam_cli._common import console
from harmowam_core.errors import HarmoWAMError

BundleArg = Annotated[
    Path | None, typer.Argument(help="Bundle directory (default: the newest in --bundles, and it says which).")
]
BundlesOption = Annotated[Path, typer.Option(help="Where bundles are kept.")]
ExecuteOption = Annotated[
    int | None,
    typer.Option(help="Actions of each 12-action chunk executed before replanning (default 12; async: 8).", min=1),
]
DenoiseOption = Annotated[
    int | None,
    typer.Option("--denoising-steps", help="World-model denoising steps (default: the bundle's, 5).", min=1),
]
AsyncOption = Annotated[
    bool,
    typer.Option("--async/--sync", help="Plan the next chunk in the background while the current one executes."),
]
MaxStepsOption = Annotated[int | None, typer.Option(help="Episode step limit (default: the recipe's).", min=1)]


def pick_bundle(
    bundle: Path | None,
    bundles: Path,
    task: str | None = None,
    arms: str | None = None,
    options: dict | None = None,
) -> Path:
    """The given bundle (checked against --task / --arms), or the newest matching one in `bundles`; its files
    checked against the hashes export recorded, and the policy's run-time `options` (`policy_options`) against
    its models, before anything is printed or started."""
    from harmowam_core.policy.bundle import newest_bundle, read_bundle, verify_bundle
    from harmowam_core.policy.policy import check_policy_options

    if arms is not None and arms not in ("single", "dual"):
        raise HarmoWAMError(f"--arms must be single or dual, got '{arms}'")
    newest = bundle is None
    if newest:
        bundle = newest_bundle(bundles, task=task, arms=arms)
    else:
        meta = read_bundle(bundle)
        if task is not None and meta["task"] != task:
            raise HarmoWAMError(f"{bundle} is a {meta['task']} bundle, not {task}")
        if arms is not None and meta.get("arms", "single") != arms:
            raise HarmoWAMError(f"{bundle} is a {meta.get('arms', 'single')}-arm bundle, not {arms}-arm")
    verify_bundle(bundle)
    check_policy_options(bundle, **(options or {}))
    if newest:
        console.print(f"using the newest bundle: [bold]{bundle}[/]")
    return bundle


def policy_options(execute_steps: int | None, denoising_steps: int | None, async_inference: bool) -> dict:
    return {"execute_steps": execute_steps, "denoising_steps": denoising_steps, "async_inference": async_inference}


BackendOption = Annotated[
    str, typer.Option(help="Station: sim (the simulated Franka station) | real (the FR3 station of --station).")
]
StationOption = Annotated[
    Path | None,
    typer.Option(help="Real station configuration (default: ~/.config/harmowam/station.yaml).", metavar="FILE"),
]
DryRunOption = Annotated[
    bool,
    typer.Option("--dry-run", help="Real station: connect to nothing, print the commands that would be sent."),
]


def check_backend(backend: str, station: Path | None, dry_run: bool) -> None:
    from harmowam_core.envs import BACKENDS

    if backend not in BACKENDS:
        raise HarmoWAMError(f"--backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    if backend == "sim" and (station is not None or dry_run):
        raise HarmoWAMError("--station and --dry-run apply to --backend real only")
