"""Stage-wise evaluation of a bundle in the simulator, in-domain and under the OOD protocols (paper 4.2-4.4).

    report = evaluate(Path("bundles/stack_cans-20261124-120000"), protocols=["none", "position"],
                      routers=["gate", "predictive"], episodes=20, seed=1000, out=Path("runs/eval/x"))
    report.rows                       # one StageRow per (actor, protocol): stage success rates and their mean
    write_outputs(report, out)        # results.json, results.csv, success.png/.pdf/.svg

Every actor (router, or the scripted expert) is evaluated on the same scenes: episode i of a protocol uses
seed + i, so rows are paired comparisons. Rows follow the paper's Tables 2-3 and 5-8: the fraction of episodes
reaching each stage (stages are sequential) and their mean ("avg"). Episode videos go to
out/videos/<actor>/<protocol>/episode_<i>.mp4, and with `traces` each episode's steps to
out/traces/<actor>/<protocol>/episode_<i>.parquet (`evaluation.trace`).

Each (protocol, episode, actor) is one job. `workers` > 1 runs the jobs in spawned simulator processes
(`harmowam_core.workers`), each loading the bundle once; the report lists the results in the same order as one
worker would, with the same per-episode results. `shard=(i, N)` runs only every N-th job from job i (for a
cluster array) and marks the report partial; `merge_reports` combines the shards' reports into the report of
one run, refusing shards of different bundles, protocols, actors, seeds or settings.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from harmowam_core.envs.ood import check_protocol
from harmowam_core.errors import HarmoWAMError, ParameterError
from harmowam_core.evaluation.report import EvalReport
from harmowam_core.evaluation.rollout import EpisodeResult, PolicyActor, ScriptedActor, run_episode
from harmowam_core.policy.routers import check_router
from harmowam_core.seeds import check_seeds
from harmowam_core.workers import (
    WorkerError,
    WorkerPool,
    bundle_bytes,
    check_workers,
    deterministic_cpu,
    resolve,
    sigterm_as_interrupt,
)

EVAL_SESSION = "harmowam_core.evaluation.runner:EvalSession"  # what plays the jobs (phase_split has another)


def check_eval_args(
    protocols: list[str],
    routers: list[str],
    episodes: int,
    scripted: bool,
    backend: str,
    seed: int = 0,
    max_steps: int | None = None,
) -> None:
    """Every mistake in an evaluation's settings, before anything is loaded."""
    if episodes < 1:
        raise ParameterError("episodes", f"must be at least 1, got {episodes}")
    check_seeds(seed, episodes)
    if max_steps is not None and max_steps < 1:
        raise ParameterError("max_steps", f"must be at least 1, got {max_steps}")
    for router in routers:
        check_router(router)
    for protocol in protocols:
        check_protocol(protocol)
    if scripted and backend != "sim":
        raise HarmoWAMError("the scripted expert exists only in the simulator: drop --scripted on the real station")


def quiet_libraries() -> None:
    """Silence diffusers' and transformers' own tqdm bars (loading weights, writing shards): a command's rich
    progress says what is happening, and a worker process has no bars of its own."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


class EvalSession:
    """A bundle's actors on one station: what one evaluation worker (or the evaluating process) holds. `run`
    plays one job, (protocol, episode, actor, video path or None, trace path or None), and returns its
    EpisodeResult."""

    def __init__(
        self,
        bundle: Path,
        routers: list[str],
        scripted: bool,
        seed: int,
        max_steps: int | None = None,
        policy_options: dict | None = None,
        backend: str = "sim",
        station: Path | None = None,
        dry_run: bool = False,
    ):
        from harmowam_core.envs import make_env
        from harmowam_core.policy.bundle import bundle_recipe
        from harmowam_core.policy.policy import HarmoWAMPolicy

        quiet_libraries()  # a worker process: no loading bars of its own
        self.recipe = recipe = bundle_recipe(bundle)
        self.seed, self.steps = seed, recipe.step_limit(max_steps)
        unique = list(dict.fromkeys(routers))
        # verify=False: `evaluate` / `deploy` verified the bundle's hashes once, before any worker started
        options = policy_options or {}
        self.policies = HarmoWAMPolicy.from_bundle_routers(bundle, unique, verify=False, **options) if unique else []
        actors = [PolicyActor(p) for p in self.policies] + ([ScriptedActor()] if scripted else [])
        self.actors = {a.name: a for a in actors}
        self.camera = self.policies[0].camera if self.policies else "front"
        self.env = make_env(recipe, backend, station=station, dry_run=dry_run)
        self.simulator = backend == "sim"

    def run(self, job: tuple, on_step: Callable[[int, str], None] | None = None) -> EpisodeResult:
        """The episode of `job`; in the simulator its `transit` records whether the gripper reached the first
        target's vicinity (`phase_split`, paper appendix D.2)."""
        from harmowam_core.phase_split import TransitProbe

        protocol, episode, actor, video, trace = job
        probe = TransitProbe(self.env) if self.simulator else None

        def stepped(done: int, used: str) -> None:
            if probe is not None:
                probe.update()
            if on_step is not None:
                on_step(done, used)

        with deterministic_cpu() if self.simulator else nullcontext():
            result = run_episode(
                self.env, self.actors[actor], seed=self.seed + episode, ood=protocol, max_steps=self.steps,
                episode=episode, video=video, fps=self.recipe.fps, camera=self.camera, on_step=stepped, trace=trace,
            )  # fmt: skip
        result.transit = probe.reached if probe is not None else None
        return result

    def close(self) -> None:
        for policy in self.policies:
            policy.close()
        self.env.close()


def evaluate(
    bundle: Path,
    protocols: list[str],
    routers: list[str],
    episodes: int,
    seed: int,
    out: Path,
    *,
    scripted: bool = False,
    max_steps: int | None = None,
    videos: bool = True,
    traces: bool = False,
    policy_options: dict | None = None,
    on_episode: Callable[[EpisodeResult, int, int], None] | None = None,
    on_step: Callable[[int, str], None] | None = None,
    backend: str = "sim",
    station: Path | None = None,
    dry_run: bool = False,
    workers: int | None = 1,
    shard: tuple[int, int] = (0, 1),
    session: str = EVAL_SESSION,
) -> EvalReport:
    """Run `episodes` episodes per protocol for every router (and the scripted expert) on the bundle's task;
    on the real station (`backend="real"`) the operator scores every episode's stages. See the module docstring
    for `workers` and `shard`; `on_step` is called only when the episodes run in this process. `session` names
    the EvalSession class that plays the jobs (`phase_split.HANDOVER_SESSION`: interaction episodes)."""
    from harmowam_core.policy.bundle import bundle_recipe, read_bundle, verify_bundle

    check_eval_args(protocols, routers, episodes, scripted, backend, seed, max_steps)
    verify_bundle(bundle)  # here, once, before any worker or station starts
    meta = read_bundle(bundle)
    recipe = bundle_recipe(bundle)
    actors = list(dict.fromkeys(routers)) + (["scripted"] if scripted else [])
    report = EvalReport(str(bundle), meta["task"], [s.name for s in recipe.stages], protocols, actors, episodes, seed)
    report.settings = {
        "bundle": {"name": meta.get("name"), "created": meta.get("created")},
        "max_steps": recipe.step_limit(max_steps),
        "policy": {k: v for k, v in sorted((policy_options or {}).items())},
        "backend": backend,
    }
    if session != EVAL_SESSION:
        report.settings["session"] = session
    index, count = shard
    report.shard = [index, count] if count > 1 else None
    jobs = [
        (
            p, i, a, out / "videos" / a / p / f"episode_{i:03d}.mp4" if videos else None,
            out / "traces" / a / p / f"episode_{i:03d}.parquet" if traces else None,
        )
        for p, i, a in report.jobs()[index::count]
    ]  # fmt: skip
    report.workers = check_workers(workers, len(jobs), backend == "sim", bundle_bytes(bundle))
    args = (bundle, routers, scripted, seed, max_steps, policy_options, backend, station, dry_run)
    start = time.perf_counter()

    def finished(result: EpisodeResult) -> None:
        report.results.append(result)
        if on_episode is not None:
            on_episode(result, len(report.results), len(jobs))

    try:
        with sigterm_as_interrupt():
            if report.workers == 1:
                _run_here(resolve(session)(*args), jobs, report, finished, on_step)
            else:
                with WorkerPool(report.workers, session, args) as pool:
                    try:
                        for _, result in pool.run((job[:3], job) for job in jobs):
                            finished(result)
                    except KeyboardInterrupt:
                        for _, result in pool.drain():  # episodes that ended while we were interrupted
                            finished(result)
                        _remove_unfinished_videos(jobs, report)
                        raise
    except KeyboardInterrupt:
        report.interrupted = True
    except WorkerError as err:
        report.sort_results()
        raise EvalFailed(report, episode_failure(err, seed)) from None
    finally:
        report.seconds = time.perf_counter() - start
        report.sort_results()
    return report


def _remove_unfinished_videos(jobs: list, report: EvalReport) -> None:
    """Workers stopped midway leave unplayable mp4s: remove the videos of the episodes that did not finish."""
    done = {(r.protocol, r.episode, r.actor) for r in report.results}
    for job in jobs:
        if job[:3] not in done and job[3] is not None:
            Path(job[3]).unlink(missing_ok=True)


class EvalFailed(HarmoWAMError):
    """An episode failed (or a worker died); `report` holds the episodes that finished before."""

    def __init__(self, report: EvalReport, message: str):
        super().__init__(message)
        self.report = report


def episode_failure(err: WorkerError, seed: int) -> str:
    """One line for a failed evaluation job: which episode (its router, protocol and seed) and why."""
    if err.key is None:
        return err.describe()
    protocol, i, actor = err.key
    return f"episode {i} ({actor}, {protocol} scenes, seed {seed + i}) failed: {err.describe()}"


def _run_here(session: EvalSession, jobs: list, report: EvalReport, finished, on_step) -> None:
    """The jobs in this process; a failing episode is reported as a worker's would be (one line naming it)."""
    try:
        for job in jobs:
            try:
                result = session.run(job, on_step=on_step)
            except (KeyboardInterrupt, HarmoWAMError):
                raise
            except Exception as err:  # noqa: BLE001 - one line naming the episode, its traceback in a file
                message = f"{type(err).__name__}: {err}"
                raise WorkerError(job[:3], message, traceback.format_exc()) from err
            if result.interrupted:
                raise KeyboardInterrupt
            finished(result)
    finally:
        session.close()


def deploy(
    bundle: Path,
    router: str,
    episodes: int,
    out: Path,
    *,
    ood: str = "none",
    seed: int = 0,
    max_steps: int | None = None,
    policy_options: dict | None = None,
    workers: int = 1,
    backend: str = "sim",
    station: Path | None = None,
    dry_run: bool = False,
    on_step: Callable[[int, int, str], None] | None = None,
    on_result: Callable[[EpisodeResult, int], None] | None = None,
    confirm: Callable[[str], bool] | None = None,
) -> tuple[list[EpisodeResult], bool]:
    """`episodes` closed-loop episodes of the bundle's policy with one router, episode i from scene `seed + i`,
    each recorded as `out/episode_<i>.mp4`: in this process (any station), or in `workers` simulator processes
    (the same results). `on_step(episode, steps_done, status)` follows an episode in this process;
    `on_result(result, finished)` follows each finished one; `confirm(question) -> bool` asks the real
    station's operator (resets, reflex recoveries, scores; default a y/n prompt). Returns the finished
    episodes in order and whether Ctrl-C (or SIGTERM) stopped the run; an episode that fails raises
    HarmoWAMError naming it."""
    from harmowam_core.policy.bundle import verify_bundle

    check_eval_args([ood], [router], episodes, False, backend, seed, max_steps)
    verify_bundle(bundle)  # here, once, before any worker or station starts
    if workers > 1:
        return _deploy_in_workers(bundle, router, episodes, ood, seed, max_steps, policy_options or {}, out, workers,
                                  on_result)  # fmt: skip
    from harmowam_core.envs import make_env
    from harmowam_core.phase_split import TransitProbe
    from harmowam_core.policy.bundle import bundle_recipe
    from harmowam_core.policy.policy import HarmoWAMPolicy

    recipe = bundle_recipe(bundle)
    steps = recipe.step_limit(max_steps)
    results: list[EpisodeResult] = []
    with (
        HarmoWAMPolicy.from_bundle(bundle, router=router, **(policy_options or {})) as policy,
        make_env(recipe, backend, station=station, dry_run=dry_run, confirm=confirm) as env,
    ):
        actor = PolicyActor(policy)
        for i in range(episodes):
            probe = TransitProbe(env) if backend == "sim" else None  # as evaluation's episodes record it

            def stepped(done: int, used: str, i=i, probe=probe) -> None:
                if probe is not None:
                    probe.update()
                if on_step is not None:
                    stages = "".join("+" if s else "-" for s in env.stage_success())
                    on_step(i, done, f"{used} · stages {stages}")

            with deterministic_cpu() if backend == "sim" else nullcontext():
                result = run_episode(
                    env, actor, seed=seed + i, ood=ood, max_steps=steps, episode=i,
                    video=out / f"episode_{i:03d}.mp4", fps=recipe.fps, camera=policy.camera, on_step=stepped,
                )  # fmt: skip
            result.transit = probe.reached if probe is not None else None
            results.append(result)
            if on_result is not None:
                on_result(result, len(results))
            if result.interrupted:
                break
    return results, bool(results) and results[-1].interrupted


def _deploy_in_workers(
    bundle, router, episodes, ood, seed, max_steps, options, out, workers, on_result
) -> tuple[list[EpisodeResult], bool]:
    """`deploy`'s episodes in simulator worker processes, played by `EvalSession` as evaluation's are."""
    args = (bundle, [router], False, seed, max_steps, options)
    results, interrupted = [], False
    jobs = [((ood, i, router), (ood, i, router, out / f"episode_{i:03d}.mp4", None)) for i in range(episodes)]
    with sigterm_as_interrupt(), WorkerPool(workers, EVAL_SESSION, args) as pool:
        try:
            for _, result in pool.run(jobs):
                results.append(result)
                if on_result is not None:
                    on_result(result, len(results))
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
