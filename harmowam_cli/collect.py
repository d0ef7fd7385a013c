"""`harmowam collect --task NAME`: scripted demonstrations on the simulated station into a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from harmowam_cli._bundle import BackendOption, DryRunOption, StationOption, check_backend
from harmowam_cli._common import (
    MAX_SEED,
    SetOption,
    ShardOption,
    WorkersOption,
    console,
    out_dir,
    progress_bar,
    seed_ranges,
    user_errors,
)
from harmowam_core.config import load_recipe
from harmowam_core.envs.ood import OOD_KINDS, check_protocol
from harmowam_core.errors import HarmoWAMError, ParameterError
from harmowam_core.seeds import check_seeds
from harmowam_core.workers import check_workers, parse_shard, shard_share
from harmowam_core.workspace import DEFAULT


def collect(
    task: Annotated[str, typer.Option(help="Recipe name or path (e.g. stack_cans, recipes/flowers.yaml).")],
    episodes: Annotated[int, typer.Option(help="Episodes to save.", min=1)] = 20,
    ood: Annotated[str, typer.Option(help="OOD protocol: " + " | ".join(OOD_KINDS) + ".")] = "none",
    out: Annotated[Path | None, typer.Option(help="Dataset directory (default: data/<task>).", parser=out_dir)] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Scene seed of the first attempt (attempt k: seed + k; shard i/N: seed + i + k*N). Default: 0, "
            "or past the seeds the dataset already holds; seeds already in the dataset are refused.",
            min=0,
            max=MAX_SEED,
        ),
    ] = None,
    teleop: Annotated[
        str, typer.Option(help="Who acts: scripted (the privileged expert) | keyboard | spacemouse (an operator).")
    ] = "scripted",
    keep_failures: Annotated[
        bool, typer.Option("--keep-failures", help="Also save episodes that miss a stage.")
    ] = False,
    backend: BackendOption = "sim",
    station: StationOption = None,
    dry_run: DryRunOption = False,
    workers: WorkersOption = None,
    shard: ShardOption = None,
    detour: Annotated[
        float,
        typer.Option(
            help="Scripted expert only: the probability of a recovery detour before each waypoint of a fast move "
            "of 5 cm or more that rises at most 1 cm (beside and above it, then back on the plan), so the "
            "demonstrations show recoveries from states off the expert's path; the detours' own actions are "
            "recorded but never trained on.",
            min=0.0,
            max=1.0,
        ),
    ] = 0.0,
    takeover: Annotated[
        Path | None,
        typer.Option(
            help="Scripted expert only (expert takeovers, as in DAgger): an exported bundle whose policy drives "
            "each scene first; the scripted expert then takes over and finishes the task. The policy's actions "
            "are recorded but never a training target of the experts, so the demonstrations show recoveries from "
            "the states a learned policy reaches (tasks whose expert can resume: stack_cans).",
            exists=False,
        ),
    ] = None,
    takeover_router: Annotated[
        str | None, typer.Option(help="With --takeover: the router of the policy that drives first [default: gate].")
    ] = None,
    takeover_steps: Annotated[
        str | None,
        typer.Option(
            help="With --takeover: the policy's steps before the takeover, N or FIRST-LAST (drawn uniformly "
            "per scene seed; below the recipe's step limit, which the expert then has whole) [default: 20-300]."
        ),
    ] = None,
    set_: SetOption = None,
) -> None:
    """Record demonstrations on the simulated Franka station (scripted expert or teleoperated) or on the real
    one (SpaceMouse or keyboard; the operator scores the stages and keeps or discards each episode)."""
    run_collect(
        task, episodes, ood, out, seed, teleop, keep_failures, set_ or [], backend, station, dry_run, workers, shard,
        detour, takeover, takeover_router, takeover_steps,
    )  # fmt: skip


@user_errors
def run_collect(
    task: str,
    episodes: int,
    ood: str,
    out: Path | None,
    seed: int | None,
    teleop: str,
    keep_failures: bool,
    overrides: list[str],
    backend: str = "sim",
    station: Path | None = None,
    dry_run: bool = False,
    workers: int | None = None,
    shard: str | None = None,
    detour: float = 0.0,
    takeover: Path | None = None,
    takeover_router: str | None = None,
    takeover_steps: str | None = None,
) -> None:
    from harmowam_core.collect import Takeover, check_detour, check_seed, check_takeover, parse_takeover_steps
    from harmowam_core.collect import collect as collect_episodes
    from harmowam_core.envs.sim.teleop import device_class

    check_protocol(ood)
    check_backend(backend, station, dry_run)
    shard_index = parse_shard(shard)
    if episodes < 1:
        raise ParameterError("episodes", f"must be at least 1, got {episodes}")
    if seed is not None:
        check_seeds(seed)  # and every seed of the collection's attempts, below (check_seed)
    if backend == "real" and teleop == "scripted":
        raise HarmoWAMError("the real station has no scripted expert: pass --teleop spacemouse or keyboard")
    if teleop == "scripted" and backend == "sim":
        check_workers(workers, episodes)
    elif workers is not None and workers > 1:
        raise HarmoWAMError("--workers applies to scripted collection in the simulator; an operator drives one station")
    elif workers is not None and workers < 1:
        raise HarmoWAMError(f"--workers must be at least 1, got {workers}")
    check_detour(detour, teleop == "scripted" and backend == "sim")
    recipe = load_recipe(task, overrides)
    takeover_spec = None
    if takeover is not None:  # before a device opens or anything is written
        steps = parse_takeover_steps(takeover_steps or "20-300")
        takeover_spec = Takeover(takeover, takeover_router or "gate", steps)
        check_takeover(takeover_spec, recipe, teleop == "scripted" and backend == "sim")
    elif takeover_router is not None or takeover_steps is not None:
        option = "--takeover-router" if takeover_router is not None else "--takeover-steps"
        raise HarmoWAMError(f"{option} applies with --takeover BUNDLE")
    if teleop != "scripted" and backend == "sim":
        device_class(teleop)  # an unknown kind, or a device that cannot run here, fails before anything starts
    out = out or DEFAULT.data(recipe.name)
    if backend == "sim":
        check_seed(out, seed, shard_index, episodes, keep_failures, ood)
    who = "scripted expert" if teleop == "scripted" else f"{teleop} teleoperation"
    who += "" if backend == "sim" else f", real station{' (dry run)' if dry_run else ''}"
    if takeover_spec is not None:
        first, last = takeover_spec.steps
        who += f", taking over from {takeover_spec.bundle} ({takeover_spec.router}) after {first}-{last} steps"
    share = shard_share(episodes, shard_index)
    part = f" (shard {shard}: {share} of {episodes})" if shard else ""
    scenes = "in-domain scenes" if ood == "none" else f"{ood} OOD scenes"
    console.print(f"collecting [bold]{share}[/] {recipe.name} episodes{part} ({scenes}, {who}) into [bold]{out}[/]")
    with progress_bar() as bar:
        bar_task = bar.add_task("episodes", total=share, status="")

        def update(stats):
            bar.update(
                bar_task,
                completed=stats.saved,
                status=f"{stats.successes}/{stats.attempted} successful · {stats.steps_per_second:.0f} steps/s"
                + (f" · {stats.workers} workers" if stats.workers > 1 else ""),
            )

        stats = collect_episodes(
            recipe,
            out,
            episodes,
            ood=ood,
            seed=seed,
            keep_failures=keep_failures,
            teleop=teleop,
            on_progress=update,
            backend=backend,
            station=station,
            dry_run=dry_run,
            workers=workers,
            shard=shard_index,
            detour=detour,
            takeover=takeover_spec,
        )
    table = Table(title=f"{recipe.name}: {stats.attempted} episodes attempted")
    table.add_column("stage")
    table.add_column("reached", justify="right")
    for spec, count in zip(recipe.stages, stats.stage_counts, strict=True):
        table.add_row(spec.name, f"{count}/{stats.attempted}")
    console.print(table)
    if stats.policy_finished:
        console.print(f"{stats.policy_finished} attempt(s) finished by the policy alone before the takeover: not kept")
    verdict = "interrupted: " if stats.interrupted else ""
    seeds = f", seeds {seed_ranges(stats.seeds)}" if stats.seeds else ""
    console.print(
        f"{verdict}saved {stats.saved} episodes ({stats.steps} steps, {stats.steps_per_second:.1f} steps/s, "
        f"{stats.workers} worker{'s' if stats.workers > 1 else ''}{seeds}) to {out}"
    )
    if stats.saved < share and not stats.interrupted:
        alone = f" ({stats.policy_finished} finished by the policy alone)" if stats.policy_finished else ""
        raise HarmoWAMError(
            f"only {stats.saved} of {share} episodes were kept in {stats.attempted} attempts{alone}; "
            "pass --keep-failures to keep failed ones too"
        )
    return stats
