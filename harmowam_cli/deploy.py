"""`harmowam deploy [BUNDLE]`: run a bundle's policy in closed loop on a station, recording every episode."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
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
from harmowam_cli._common import WorkersOption, console, progress_bar, quiet_libraries, user_errors
from harmowam_core.action_space import check_station_action_space
from harmowam_core.envs.ood import OOD_KINDS, check_protocol
from harmowam_core.errors import HarmoWAMError
from harmowam_core.policy.routers import ROUTERS
from harmowam_core.workers import bundle_bytes, check_workers


def deploy(
    bundle: BundleArg = None,
    arms: Annotated[str | None, typer.Option(help="single | dual: the kind of station (and of bundle).")] = None,
    backend: BackendOption = "sim",
    station: StationOption = None,
    dry_run: DryRunOption = False,
    router: Annotated[str, typer.Option(help=" | ".join(ROUTERS) + " (gate: the paper).")] = "gate",
    task: Annotated[str | None, typer.Option(help="Task; without BUNDLE, the newest bundle of this task.")] = None,
    episodes: Annotated[int, typer.Option(help="Episodes to run.")] = 1,
    ood: Annotated[str, typer.Option(help="Scene protocol: " + " | ".join(OOD_KINDS) + ".")] = "none",
    seed: Annotated[int, typer.Option(help="Scene seed of the first episode; episode i uses seed + i.")] = 1000,
    max_steps: MaxStepsOption = None,
    execute_steps: ExecuteOption = None,
    denoising_steps: DenoiseOption = None,
    async_inference: AsyncOption = False,
    bundles: BundlesOption = Path("bundles"),
    out: Annotated[Path | None, typer.Option(help="Videos and results (default: runs/deploy/<bundle>-<time>).")] = None,
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
    if episodes < 1:
        raise HarmoWAMError(f"--episodes must be at least 1, got {episodes}")
    check_protocol(ood)
    if seed < 0:
        raise HarmoWAMError(f"--seed must be at least 0, got {seed}")
    if max_steps is not None and max_steps < 1:
        raise HarmoWAMError(f"--max-steps must be at least 1, got {max_steps}")
    check_backend(backend, station, dry_run)
    bundle = pick_bundle(bundle, bundles, task, arms)
    check_station_action_space(bundle)
    workers = check_workers(workers, episodes, backend == "sim", bundle_bytes(bundle))
    from harmowam_core.policy.bundle import bundle_recipe

    quiet_libraries()
    recipe = bundle_recipe(bundle)
    steps = max_steps or recipe.max_episode_steps
    out = out or Path("runs") / "deploy" / f"{bundle.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    mode = "async" if options["async_inference"] else "sync"
    console.print(
        f"deploying [bold]{bundle}[/] on the {backend} {recipe.name} station: router {router}, {mode}, "
        f"{episodes} episode(s), {ood} scenes, up to {steps} steps"
        + (f", {workers} workers" if workers > 1 else "")
        + f"; videos in [bold]{out}[/]"
    )
    if workers > 1:
        results, interrupted = _deploy_in_workers(bundle, router, episodes, ood, seed, max_steps, options, out, workers)
    else:
        results = _deploy_here(bundle, router, episodes, ood, seed, steps, options, out, backend, station, dry_run)
        interrupted = bool(results) and results[-1].interrupted
    _report(recipe, router, ood, results, out, interrupted)


def _deploy_in_workers(bundle, router, episodes, ood, seed, max_steps, options, out, workers) -> tuple[list, bool]:
    """Episodes in simulator worker processes (the same results as in this process, see `evaluation`);
    returns the finished episodes in order and whether Ctrl-C (or SIGTERM) stopped the run."""
    from harmowam_core.evaluation import episode_failure
    from harmowam_core.workers import WorkerError, WorkerPool, sigterm_as_interrupt

    args = (bundle, [router], False, seed, max_steps, options)
    results, interrupted = [], False
    jobs = [((ood, i, router), (ood, i, router, out / f"episode_{i:03d}.mp4")) for i in range(episodes)]
    with sigterm_as_interrupt(), progress_bar() as bar:
        task_id = bar.add_task("episodes", total=episodes, status="")
        with WorkerPool(workers, "harmowam_core.evaluation:EvalSession", args) as pool:
            try:
                for _, result in pool.run(jobs):
                    results.append(result)
                    stages = "".join("+" if s else "-" for s in result.stages)
                    bar.update(task_id, completed=len(results), status=f"last: episode {result.episode} {stages}")
            except KeyboardInterrupt:
                interrupted = True
                results += [result for _, result in pool.drain()]
            except WorkerError as err:
                raise HarmoWAMError(episode_failure(err, seed)) from None
    done = {r.episode for r in results}
    for i in range(episodes):  # a worker stopped midway leaves an unplayable video
        if interrupted and i not in done:
            (out / f"episode_{i:03d}.mp4").unlink(missing_ok=True)
    return sorted(results, key=lambda r: r.episode), interrupted


def _deploy_here(bundle, router, episodes, ood, seed, steps, options, out, backend, station, dry_run) -> list:
    from harmowam_core.envs import make_env
    from harmowam_core.phase_split import TransitProbe
    from harmowam_core.policy.bundle import bundle_recipe
    from harmowam_core.policy.policy import HarmoWAMPolicy
    from harmowam_core.policy.rollout import PolicyActor, run_episode
    from harmowam_core.workers import deterministic_cpu

    recipe = bundle_recipe(bundle)
    results = []
    with (
        HarmoWAMPolicy.from_bundle(bundle, router=router, **options) as policy,
        make_env(recipe, backend, station=station, dry_run=dry_run) as env,
    ):
        actor = PolicyActor(policy)
        with progress_bar() as bar:
            for i in range(episodes):
                task_id = bar.add_task(f"episode {i + 1}/{episodes}", total=steps, status="")

                probe = TransitProbe(env) if backend == "sim" else None  # as evaluation's episodes record it

                def on_step(done: int, used: str, task_id=task_id, probe=probe) -> None:
                    if probe is not None:
                        probe.update()
                    stages = "".join("+" if s else "-" for s in env.stage_success())
                    bar.update(task_id, completed=done, status=f"{used} · stages {stages}")

                with deterministic_cpu() if backend == "sim" else nullcontext():
                    result = run_episode(
                        env, actor, seed=seed + i, ood=ood, max_steps=steps, episode=i,
                        video=out / f"episode_{i:03d}.mp4", fps=recipe.fps, camera=policy.camera, on_step=on_step,
                    )  # fmt: skip
                result.transit = probe.reached if probe is not None else None
                results.append(result)
                if result.interrupted:
                    break
    return results


def _report(recipe, router, ood, results, out, interrupted: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "episodes.json").write_text(json.dumps([r.to_dict() for r in results], indent=2))
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
