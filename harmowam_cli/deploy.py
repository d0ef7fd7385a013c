"""`harmowam deploy [BUNDLE]`: run a bundle's policy in closed loop on a station, recording every episode."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.prompt import Confirm
from rich.table import Table

from harmowam_cli._bundle import (
    AsyncOption,
    BackendOption,
    BundleArg,
    BundlesOption,
    DenoiseOption,
    DryRunOption,
    ExecuteOption,
    MaxStepsOption,
    StationOption,
    check_backend,
    pick_bundle,
    policy_options,
)
from harmowam_cli._common import (
    MAX_SEED,
    WorkersOption,
    console,
    out_dir,
    progress_bar,
    quiet_libraries,
    user_errors,
)
from harmowam_core.action_space import check_station_action_space
from harmowam_core.data.meta import atomic_write_bytes
from harmowam_core.envs.ood import OOD_KINDS
from harmowam_core.policy.routers import ROUTERS
from harmowam_core.workers import bundle_bytes, check_workers
from harmowam_core.workspace import DEFAULT


def deploy(
    bundle: BundleArg = None,
    arms: Annotated[str | None, typer.Option(help="single | dual: the kind of station (and of bundle).")] = None,
    backend: BackendOption = "sim",
    station: StationOption = None,
    dry_run: DryRunOption = False,
    router: Annotated[str, typer.Option(help=" | ".join(ROUTERS) + " (gate: the paper).")] = "gate",
    task: Annotated[str | None, typer.Option(help="Task; without BUNDLE, the newest bundle of this task.")] = None,
    episodes: Annotated[int, typer.Option(help="Episodes to run.", min=1)] = 1,
    ood: Annotated[str, typer.Option(help="Scene protocol: " + " | ".join(OOD_KINDS) + ".")] = "none",
    seed: Annotated[
        int, typer.Option(help="Scene seed of the first episode; episode i uses seed + i.", min=0, max=MAX_SEED)
    ] = 1000,
    max_steps: MaxStepsOption = None,
    execute_steps: ExecuteOption = None,
    denoising_steps: DenoiseOption = None,
    async_inference: AsyncOption = False,
    bundles: BundlesOption = DEFAULT.bundles,
    out: Annotated[
        Path | None,
        typer.Option(help="Videos and results (default: runs/deploy/<bundle>-<time>).", parser=out_dir),
    ] = None,
    workers: WorkersOption = None,
) -> None:
    """Run the policy in closed loop; each episode is recorded as an mp4 of the real camera beside the world
    model's imagined future, with the expert in charge per step. Ctrl-C stops cleanly (and stops the arms)."""
    run_deploy(
        bundle, arms, backend, router, task, episodes, ood, seed, max_steps,
        policy_options(execute_steps, denoising_steps, async_inference), bundles, out, station, dry_run, workers,
    )  # fmt: skip


@user_errors
def run_deploy(
    bundle: Path | None,
    arms: str | None,
    backend: str,
    router: str,
    task: str | None,
    episodes: int,
    ood: str,
    seed: int,
    max_steps: int | None,
    options: dict,
    bundles: Path,
    out: Path | None,
    station: Path | None = None,
    dry_run: bool = False,
    workers: int | None = None,
) -> None:
    from harmowam_core.evaluation.runner import check_eval_args

    check_eval_args([ood], [router], episodes, False, backend, seed, max_steps)
    check_backend(backend, station, dry_run)
    bundle = pick_bundle(bundle, bundles, task, arms, options)
    check_station_action_space(bundle)
    workers = check_workers(workers, episodes, backend == "sim", bundle_bytes(bundle))
    from harmowam_core.policy.bundle import bundle_recipe

    quiet_libraries()
    recipe = bundle_recipe(bundle)
    steps = recipe.step_limit(max_steps)
    out = out or DEFAULT.deploy_run(bundle.name)
    mode = "async" if options["async_inference"] else "sync"
    console.print(
        f"deploying [bold]{bundle}[/] on the {backend} {recipe.name} station: router {router}, {mode}, "
        f"{episodes} episode(s), {ood} scenes, up to {steps} steps"
        + (f", {workers} workers" if workers > 1 else "")
        + f"; videos in [bold]{out}[/]"
    )
    from harmowam_core.envs.real.operator import stdin_terminal
    from harmowam_core.evaluation.runner import deploy

    with progress_bar() as bar:
        tasks: dict[int, int] = {}
        overall = bar.add_task("episodes", total=episodes, status="") if workers > 1 else None

        def on_step(episode: int, done: int, status: str) -> None:  # in this process: a bar per episode
            if episode not in tasks:
                tasks[episode] = bar.add_task(f"episode {episode + 1}/{episodes}", total=steps, status="")
            bar.update(tasks[episode], completed=done, status=status)

        def confirm(question: str) -> bool:  # the real station's operator: the bar pauses while they answer
            terminal = stdin_terminal()  # the one reader of the terminal, which also watches for Enter
            bar.stop()
            try:
                with terminal.asking() if terminal is not None else nullcontext():
                    return Confirm.ask(question, console=console, stream=terminal)
            finally:
                bar.start()

        finished_results = []

        def on_result(result, finished: int) -> None:
            finished_results.append(result)  # kept as each ends: an error in a later episode loses none
            _save_episodes(out, finished_results)
            if overall is not None:
                stages = "".join("+" if s else "-" for s in result.stages)
                bar.update(overall, completed=finished, status=f"last: episode {result.episode} {stages}")

        results, interrupted = deploy(
            bundle, router, episodes, out, ood=ood, seed=seed, max_steps=max_steps, policy_options=options,
            workers=workers, backend=backend, station=station, dry_run=dry_run, on_step=on_step, on_result=on_result,
            confirm=confirm,
        )  # fmt: skip
    _report(recipe, router, ood, results, out, interrupted)


def _save_episodes(out: Path, results) -> None:
    out.mkdir(parents=True, exist_ok=True)
    episodes = [r.to_dict() for r in sorted(results, key=lambda r: r.episode)]
    atomic_write_bytes(out / "episodes.json", json.dumps(episodes, indent=2).encode())


def _report(recipe, router, ood, results, out, interrupted: bool) -> None:
    _save_episodes(out, results)
    table = Table(title=f"{recipe.name}: {router} router, {ood} scenes")
    table.add_column("episode", justify="right")
    for stage in recipe.stages:
        table.add_column(stage.name, justify="center")
    table.add_column("steps", justify="right")
    table.add_column("predictive / reactive / average steps", justify="right")
    table.add_column("video")
    for r in results:
        share = " / ".join(str(r.expert_steps.get(k, 0)) for k in ("predictive", "reactive", "average"))
        marks = ["yes" if s else "no" for s in r.stages]
        table.add_row(str(r.episode), *marks, str(r.steps) + (" (stopped)" if r.interrupted else ""), share, r.video)
    console.print(table)
    if interrupted:
        console.print(f"[yellow]stopped by Ctrl-C[/]; what ran is saved in {out}")
        raise typer.Exit(130)
    console.print(f"{sum(r.success for r in results)}/{len(results)} episodes reached every stage · {out}")
