"""`harmowam eval [BUNDLE]`: stage-wise success in-domain and under the OOD protocols, routers side by side;
`harmowam eval merge DIR...`: one result from the shards of an evaluation run with `--shard i/N`."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.table import Table
from typer.core import TyperCommand

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
    OneLineCommand,
    OneLineGroup,
    ShardOption,
    WorkersOption,
    console,
    out_dir,
    progress_bar,
    quiet_libraries,
    user_errors,
)
from harmowam_core.action_space import check_station_action_space
from harmowam_core.envs import OOD_KINDS
from harmowam_core.errors import HarmoWAMError
from harmowam_core.policy.routers import ROUTERS
from harmowam_core.workers import bundle_bytes, check_workers, parse_shard
from harmowam_core.workspace import DEFAULT


class EvalCommand(TyperCommand):
    """`eval` is a command with a positional BUNDLE and one subcommand, `merge`: `harmowam eval merge ...` is
    handed to the merge command before the bundle argument is parsed."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] == "merge":
            ctx.meta["harmowam.eval_merge"] = args[1:]
            return []
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        if "harmowam.eval_merge" in ctx.meta:
            command = typer.main.get_command(merge_app)
            return command.main(ctx.meta["harmowam.eval_merge"], prog_name=f"{ctx.command_path} merge")
        return super().invoke(ctx)


def evaluate(
    bundle: BundleArg = None,
    ood: Annotated[
        str, typer.Option(help=" | ".join(OOD_KINDS) + " | all, or a comma-separated list (none = in-domain).")
    ] = "none",
    episodes: Annotated[int, typer.Option(help="Episodes per protocol and router (the paper: 20).", min=1)] = 20,
    router: Annotated[
        list[str] | None,
        typer.Option(help=" | ".join(ROUTERS) + "; repeat to compare side by side (default: gate)."),
    ] = None,
    scripted: Annotated[
        bool, typer.Option("--scripted", help="Add the scripted expert as an upper-bound row (same scenes).")
    ] = False,
    seed: Annotated[
        int,
        typer.Option(
            help="Scene seed of episode 0 (episode i: seed + i; collection starts at 0).", min=0, max=MAX_SEED
        ),
    ] = 1000,
    max_steps: MaxStepsOption = None,
    execute_steps: ExecuteOption = None,
    denoising_steps: DenoiseOption = None,
    async_inference: AsyncOption = False,
    videos: Annotated[bool, typer.Option("--videos/--no-videos", help="Record every episode as an mp4.")] = True,
    traces: Annotated[
        bool,
        typer.Option(
            "--traces",
            help="Also write every episode's steps (state, action, the expert in charge, p(interaction), stages, "
            "the target object's position) as traces/<router>/<protocol>/episode_<i>.parquet.",
        ),
    ] = False,
    bundles: BundlesOption = DEFAULT.bundles,
    out: Annotated[
        Path | None, typer.Option(help="Results directory (default: runs/eval/<bundle>-<time>).", parser=out_dir)
    ] = None,
    backend: BackendOption = "sim",
    station: StationOption = None,
    dry_run: DryRunOption = False,
    workers: WorkersOption = None,
    shard: ShardOption = None,
) -> None:
    """Evaluate a bundle: stage-wise success per protocol and router (the paper's Tables 2-3, 5-8), printed and
    saved as results.json, results.csv and success.png, with a video of every episode. In the simulator the
    stages are checked; on the real station the operator scores them after each episode.

    With --shard i/N only every N-th episode runs and the results are partial: combine the shards with
    [bold]harmowam eval merge DIR...[/] (see `harmowam eval merge --help`)."""
    run_eval(
        bundle, ood, episodes, router or ["gate"], scripted, seed, max_steps,
        policy_options(execute_steps, denoising_steps, async_inference), videos, bundles, out, backend, station,
        dry_run, workers, shard, traces,
    )  # fmt: skip


@user_errors
def run_eval(
    bundle: Path | None,
    ood: str,
    episodes: int,
    routers: list[str],
    scripted: bool,
    seed: int,
    max_steps: int | None,
    options: dict,
    videos: bool,
    bundles: Path,
    out: Path | None,
    backend: str = "sim",
    station: Path | None = None,
    dry_run: bool = False,
    workers: int | None = None,
    shard: str | None = None,
    traces: bool = False,
):
    from harmowam_core.envs.ood import parse_protocols
    from harmowam_core.evaluation.report import write_outputs
    from harmowam_core.evaluation.runner import EvalFailed, check_eval_args
    from harmowam_core.evaluation.runner import evaluate as run
    from harmowam_core.policy.bundle import bundle_recipe

    quiet_libraries()
    protocols = parse_protocols(ood)
    check_backend(backend, station, dry_run)
    check_eval_args(protocols, routers, episodes, scripted, backend, seed, max_steps)
    shard_index = parse_shard(shard)
    bundle = pick_bundle(bundle, bundles, options=options)
    check_station_action_space(bundle)
    part = f"-shard{shard_index[0]}of{shard_index[1]}" if shard else ""
    out = out or DEFAULT.eval_run(bundle.name, part)
    actors = list(dict.fromkeys(routers)) + (["scripted"] if scripted else [])
    total = len(actors) * len(protocols) * episodes
    jobs = len(range(shard_index[0], total, shard_index[1]))
    share = f" (shard {shard}: {jobs} of the {total} episodes)" if shard else ""
    n_workers = check_workers(workers, jobs, backend == "sim", bundle_bytes(bundle))
    console.print(
        f"evaluating [bold]{bundle}[/]: {', '.join(actors)} × {', '.join(protocols)} × {episodes} episodes "
        f"(seeds {seed}..{seed + episodes - 1}){share}, {n_workers} worker{'s' if n_workers > 1 else ''}, "
        f"into [bold]{out}[/]"
    )
    steps = bundle_recipe(bundle).step_limit(max_steps)
    with eval_progress(jobs, steps, n_workers) as (on_episode, on_step):
        try:
            report = run(
                bundle, protocols, routers, episodes, seed, out, scripted=scripted, max_steps=max_steps,
                videos=videos, traces=traces, policy_options=options, on_episode=on_episode, on_step=on_step,
                backend=backend, station=station, dry_run=dry_run, workers=n_workers, shard=shard_index,
            )  # fmt: skip
        except EvalFailed as err:
            err.report.interrupted = True  # partial: `eval merge` refuses it
            paths = write_outputs(err.report, out)
            done = len(err.report.results)
            raise HarmoWAMError(f"{err}; the {done} finished episode(s) are in {paths['json']}") from None
    paths = write_outputs(report, out)
    print_table(report)
    if report.interrupted:
        console.print(f"[yellow]stopped by Ctrl-C[/]; the finished episodes are in {paths['json']}")
        raise typer.Exit(130)
    console.print(
        f"results: {paths['json']} · {paths['csv']} · {paths['png']}"
        + (f" · videos {out / 'videos'}" if videos else "")
        + (f" · traces {out / 'traces'}" if traces else "")
    )
    if report.shard is not None:
        console.print(f"partial results of shard {shard}: combine every shard's with `harmowam eval merge DIR...`")
    return report, paths


@contextmanager
def eval_progress(jobs: int, steps: int, workers: int):
    """Rich bars for evaluation episodes: yields (on_episode, on_step) for `evaluation.runner.evaluate`. The bar of
    the episode in progress (steps) shows only when the episodes run in this process."""
    with progress_bar() as bar:
        overall = bar.add_task("episodes", total=jobs, status="")
        current = bar.add_task("steps", total=steps, status="") if workers == 1 else None

        def on_step(done: int, used: str) -> None:
            if current is not None:
                bar.update(current, completed=done, status=used)

        def on_episode(result, done: int, total: int) -> None:
            stages = "".join("+" if s else "-" for s in result.stages)
            bar.update(overall, completed=done, status=f"last: {result.actor} {result.protocol} {stages}")
            if current is not None:
                bar.reset(current)

        yield on_episode, on_step


merge_app = typer.Typer(add_completion=False, rich_markup_mode="rich", cls=OneLineGroup)


@merge_app.command(cls=OneLineCommand)
def merge(
    shards: Annotated[
        list[Path], typer.Argument(help="Result directories of the shards (results.json inside).", metavar="DIR...")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Where the merged results go (default: runs/eval/merged-<time>).", parser=out_dir),
    ] = None,
) -> None:
    """Combine the partial results of `harmowam eval --shard i/N` runs (one per shard, any order) into the
    results.json, results.csv, success.png and table of one run. Refuses shards of different bundles,
    protocols, routers, seeds or settings, and a missing or repeated shard, with one line."""
    run_merge(shards, out)


@user_errors
def run_merge(shards: list[Path], out: Path | None):
    from harmowam_core.evaluation.report import merge_reports, read_report, write_outputs

    if out is not None and any(out.resolve() == path.resolve() for path in shards):
        raise HarmoWAMError(f"--out {out} is one of the shards: the merge would overwrite its results; choose another")
    if out is not None and (out / "results.json").exists():
        raise HarmoWAMError(f"--out {out} already holds results; choose a new directory")
    reports = [read_report(path) for path in shards]
    report = merge_reports(reports, [str(p) for p in shards])
    out = out or DEFAULT.eval_run("merged")
    paths = write_outputs(report, out)
    print_table(report)
    console.print(
        f"merged {len(shards)} shards ({len(report.results)} episodes): {paths['json']} · {paths['csv']} · "
        f"{paths['png']} (videos stay in the shards' directories)"
    )
    return report, paths


def print_table(report) -> None:
    from harmowam_core.evaluation.report import PROTOCOL_NAMES

    counts = sorted({row.episodes for row in report.rows}) or [0]
    per_row = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    table = Table(title=f"{report.task}: stage-wise success ({per_row} episodes per row)")
    table.add_column("actor")
    table.add_column("protocol")
    for name in report.stage_names:
        table.add_column(name, justify="right")
    table.add_column("avg", justify="right")
    for row in report.rows:
        rates = [f"{r:.2f}" for r in row.stage_rates]
        table.add_row(row.actor, PROTOCOL_NAMES[row.protocol], *rates, f"[bold]{row.avg:.2f}[/]")
    console.print(table)
