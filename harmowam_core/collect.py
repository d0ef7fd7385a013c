"""Demonstration collection: run a station with the scripted expert, or an operator on an input device, and
record episodes into a dataset.

    result = collect(load_recipe("stack_cans"), Path("data/stack_cans"), episodes=5, workers=2)

Scenes and seeds. Episode attempts take scene seeds from the sequence seed + shard_index + k * shard_count
(k = 0, 1, ...), so shards (`shard=(i, N)`) and the workers of one run take disjoint seeds. Without `seed`,
a collection into an existing dataset continues past the seeds it already holds; an explicit `seed` whose
attempts could reuse one of them is refused. Every episode row records its `seed` and `ood` protocol.

Episodes are saved one by one (crash-safe, see `data.writer`). Without `keep_failures`, an episode that does
not reach every stage is discarded and the next seed is tried, up to three attempts per requested episode.
With `workers` > 1 (scripted simulator collection only) the episodes are recorded in spawned simulator
processes (`harmowam_core.workers`) while this process alone commits them, in seed order: the dataset is the
same as with one worker (the first `episodes` successful seeds, the same frames). Ctrl-C keeps every finished
episode and discards only those in progress; a worker that fails stops the collection with one line naming
its seed, keeping the episodes committed so far.

Takeovers (`takeover`): expert takeovers from the states a learner visits, in the spirit of DAgger (Ross et al.
2011) and HG-DAgger (Kelly et al. 2019), with the switch at a random step rather than an expert's call. A learned
policy (an exported bundle and a router) drives each scene first, for a number of steps drawn per seed, then the
scripted expert takes over from wherever the policy left the scene and finishes the task, with the recipe's whole
step limit of its own (a task whose plan can resume, see `SimTask.resumable`). The whole episode is recorded; the
policy's steps are kept in the episode's `detours` runs with the expert's own recovery detours: frames whose
actions are never a training target of the experts or the gate (the world model still trains on their video).
So the demonstrations show the expert recovering from the states the learned policy reaches. Only takeovers the
expert finishes are kept (without `keep_failures`), so the states it cannot recover from are left out; an attempt
the policy finished alone is not kept either (`CollectStats.policy_finished`).

A teleoperated episode ends when every stage has succeeded, when the operator ends it (the device's reset
key) or at the recipe's step limit. On the real station (`backend="real"`) the operator drives with a
SpaceMouse or the keyboard, scores the stages after each episode and keeps or discards it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harmowam_core.config import Recipe
from harmowam_core.data.format import DatasetSpec, frame_runs
from harmowam_core.data.meta import read_episode_rows, used_seeds
from harmowam_core.data.writer import DatasetWriter, EpisodeRecorder, StagedEpisode
from harmowam_core.envs import make_env
from harmowam_core.envs.ood import check_protocol
from harmowam_core.errors import HarmoWAMError, ParameterError
from harmowam_core.seeds import check_seeds
from harmowam_core.workers import (
    WorkerError,
    WorkerPool,
    bundle_bytes,
    check_workers,
    resolve,
    shard_share,
    sigterm_as_interrupt,
)

# What records scripted episodes, by "module:callable" (spawned workers build it by name; tests substitute one)
RECORDER = "harmowam_core.collect:ScriptedRecorder"
SETTLE_FRAMES = 5  # frames kept after the last stage succeeds, so demonstrations end at rest
ATTEMPTS_PER_EPISODE = 3  # without keep_failures: attempts allowed per requested episode


@dataclass
class CollectStats:
    attempted: int = 0
    saved: int = 0
    successes: int = 0
    steps: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    stage_counts: list[int] = field(default_factory=list)  # episodes reaching each stage
    seeds: list[int] = field(default_factory=list)  # scene seeds of the saved episodes, in dataset order
    workers: int = 1
    policy_finished: int = 0  # takeover attempts the policy finished alone (not kept; not counted in the stages)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


def dataset_spec(recipe: Recipe, robot_type: str = "franka_sim") -> DatasetSpec:
    return DatasetSpec(
        fps=recipe.fps,
        num_arms=1 if recipe.arms == "single" else 2,
        cameras={c.name: (c.height, c.width) for c in recipe.cameras},
        robot_type=robot_type,
    )


@dataclass(frozen=True)
class Takeover:
    """Who drives before the scripted expert takes over (see the module docstring): the policy of the exported
    `bundle` with `router`, for a number of steps drawn uniformly from `steps` (first, last; inclusive) for
    each scene seed, from a random stream of its own (the scene is the same as without a takeover)."""

    bundle: Path
    router: str = "gate"
    steps: tuple[int, int] = (20, 300)

    def steps_for(self, seed: int) -> int:
        """The policy's steps before the takeover in the scene of `seed`."""
        return int(np.random.default_rng([seed, TAKEOVER_STREAM]).integers(self.steps[0], self.steps[1] + 1))


TAKEOVER_STREAM = 0x7A4E  # the takeover step's random stream: apart from the scene's and the expert's


def parse_takeover_steps(text: str) -> tuple[int, int]:
    """'20-300' -> (20, 300); '150' -> (150, 150). Raises ParameterError for anything else."""
    parts = text.split("-")
    try:
        first, last = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (-1, -1)
    except ValueError:
        first, last = -1, -1
    if not 1 <= first <= last:
        raise ParameterError("takeover-steps", f"must be N or FIRST-LAST with 1 <= FIRST <= LAST, got '{text}'")
    return first, last


def check_takeover(takeover: Takeover, recipe: Recipe, scripted_sim: bool) -> None:
    """Refuse a takeover that cannot run, before anything starts: not the scripted simulator expert, a task whose
    scripted expert cannot resume from a policy's state, a bundle of another task, an unknown router. Raises
    HarmoWAMError naming what is wrong (ParameterError for an option)."""
    from harmowam_core.envs.sim.tasks import resumable_task_names
    from harmowam_core.policy.bundle import bundle_recipe, verify_bundle
    from harmowam_core.policy.policy import check_policy_options
    from harmowam_core.policy.routers import check_router

    if not scripted_sim:
        raise ParameterError("takeover", "the scripted expert takes over, in the simulator")
    resumable = resumable_task_names()
    if recipe.name not in resumable:
        raise ParameterError(
            "takeover",
            f"the scripted expert of {recipe.name} cannot yet take over from a policy's state "
            f"(tasks that can: {', '.join(resumable)})",
        )
    try:
        check_router(takeover.router)
    except ParameterError as err:
        raise ParameterError("takeover-router", err.problem) from None
    first, last = takeover.steps
    if not 1 <= first <= last < recipe.max_episode_steps:
        raise ParameterError(
            "takeover-steps",
            f"must be 1 <= FIRST <= LAST < the step limit {recipe.max_episode_steps}, got {first}-{last}",
        )
    bundle = Path(takeover.bundle)
    verify_bundle(bundle)
    check_policy_options(bundle)  # its models' configurations load, before anything is written
    trained = bundle_recipe(bundle)
    if trained.name != recipe.name:
        raise ParameterError("takeover", f"{bundle} was trained on {trained.name}, not {recipe.name}")

    def station(r: Recipe):  # what the policy reads and drives, as the recipe sets it
        return r.fps, r.arms, sorted((c.role, c.name) for c in r.cameras)

    if station(trained) != station(recipe):
        raise ParameterError(
            "takeover", f"{bundle} was trained with another rate, arms or cameras than this collection's recipe"
        )


def check_detour(detour: float, scripted_sim: bool) -> None:
    """ParameterError unless `detour` is a probability, and 0 where no scripted simulator expert records."""
    if not 0.0 <= detour <= 1.0:
        raise ParameterError("detour", f"must be a probability from 0 to 1, got {detour}")
    if detour and not scripted_sim:
        raise ParameterError("detour", "applies to the scripted expert in the simulator")


def seed_sequence(first: int, shard: tuple[int, int] = (0, 1)) -> Iterator[int]:
    """The scene seeds of a run's attempts: first + i + k * N for shard (i, N), k = 0, 1, ..."""
    index, count = shard
    return itertools.count(first + index, count)


def plan_seeds(
    seed: int | None, shard: tuple[int, int], used: set[int], attempts: int, out: Path, unknown: int = 0
) -> Iterator[int]:
    """The seeds to try: continue past `used` without `seed`; refuse an explicit `seed` that could reuse one.
    `unknown` episodes of the dataset were recorded without their seed (before seeds were kept): there is no
    telling which scenes they hold, so a `seed` past them is required."""
    if seed is None and unknown:
        raise HarmoWAMError(
            f"{out} holds {unknown} episode(s) recorded before scene seeds were kept, from seeds 0 to at most "
            f"{ATTEMPTS_PER_EPISODE * unknown - 1}: pass --seed {ATTEMPTS_PER_EPISODE * unknown} (or higher) "
            "to record new scenes"
        )
    if seed is None:
        first = 0
        if used:  # skip to the first seed of this shard's sequence past every seed already in the dataset
            index, count = shard
            steps = max(0, (max(used) - index) // count + 1)
            first = steps * count
        return seed_sequence(first, shard)
    check_seeds(seed, attempts * shard[1])  # every seed it may try: seed + i + k*N, k < attempts
    clash = sorted(set(itertools.islice(seed_sequence(seed, shard), attempts)) & used)
    if clash:
        shown = ", ".join(map(str, clash[:5])) + (", ..." if len(clash) > 5 else "")
        raise HarmoWAMError(
            f"{out} already holds episodes of seed(s) {shown}; the first unused seed is {max(used) + 1} "
            "(drop --seed to continue after them)"
        )
    return seed_sequence(seed, shard)


def check_seed(
    out: Path, seed: int | None, shard: tuple[int, int], episodes: int, keep_failures: bool, ood: str = "none"
) -> None:
    """Refuse, before anything starts, seeds that could reuse a scene of the dataset at `out` (see `plan_seeds`;
    `collect` checks again under the dataset's lock)."""
    rows = read_episode_rows(Path(out))
    attempts = shard_share(episodes, shard) * (1 if keep_failures else ATTEMPTS_PER_EPISODE)
    plan_seeds(seed, shard, used_seeds(rows, ood), attempts, out, unknown_seeds(rows))


def unknown_seeds(rows: list[dict]) -> int:
    """Episodes recorded without their scene seed (datasets written before seeds were kept)."""
    return sum(r.get("seed") is None for r in rows)


@dataclass
class ScriptedEpisode:
    """A scripted episode recorded in a worker (or in this process), staged for the commit."""

    seed: int
    stages: list[bool]
    steps: int
    staged: StagedEpisode | None  # None: discarded (a failure, when failures are not kept)
    policy_finished: bool = False  # a takeover's policy reached every stage before the expert took over


class ScriptedRecorder:
    """A simulated station and its scripted expert recording episodes into a dataset's staging folder; the state
    of one collection worker (`WorkerPool` setup) or of the collecting process itself."""

    def __init__(
        self,
        recipe: Recipe,
        spec: DatasetSpec,
        staging_root: Path,
        ood: str,
        keep_failures: bool,
        detour: float = 0.0,
        takeover: Takeover | None = None,
    ):
        self.recipe, self.spec, self.staging_root = recipe, spec, Path(staging_root)
        self.ood, self.keep_failures, self.detour = ood, keep_failures, detour
        self.names = {c.role: c.name for c in recipe.cameras}
        self.takeover, self.actor = takeover, None
        if takeover is not None:
            from harmowam_core.evaluation.rollout import PolicyActor
            from harmowam_core.evaluation.runner import quiet_libraries
            from harmowam_core.policy.policy import HarmoWAMPolicy

            quiet_libraries()
            # verify=False: `check_takeover` verified the bundle's hashes once, before any worker started
            self.actor = PolicyActor(HarmoWAMPolicy.from_bundle(takeover.bundle, router=takeover.router, verify=False))
        self.env = make_env(recipe)

    def run(self, seed: int, on_step: Callable[[], None] | None = None) -> ScriptedEpisode:
        recorder = EpisodeRecorder(self.spec, self.staging_root, self.recipe.instruction)
        try:
            obs = self.env.reset(seed=seed, ood=self.ood)
            detours: list[int] = []  # frames whose actions are not the expert's: the policy's, the detours'
            if self.actor is not None:
                obs = self._drive(obs, self.takeover.steps_for(seed), recorder, on_step)
                detours = list(range(len(recorder)))
                if all(self.env.stage_success()):  # the policy did it all: nothing of the expert's to record
                    steps = len(recorder)
                    recorder.discard()
                    return ScriptedEpisode(seed, [True] * len(self.recipe.stages), steps, None, policy_finished=True)
            pilot = self.env.expert(detour=self.detour)
            after = 0
            for _ in range(self.recipe.max_episode_steps):
                action = pilot.act()
                if pilot.detouring:
                    detours.append(len(recorder))
                recorder.add_frame(action, obs.state, self._images(obs))
                obs = self.env.step(action)
                if on_step is not None:
                    on_step()
                if all(self.env.stage_success()):
                    after += 1
                    if after > SETTLE_FRAMES:
                        break
        except BaseException:
            recorder.discard()
            raise
        stages = [bool(s) for s in self.env.stage_success()]
        if all(stages) or self.keep_failures:
            staged = recorder.finish(stages, seed=seed, ood=self.ood, detours=frame_runs(detours))
            return ScriptedEpisode(seed, stages, len(recorder), staged)
        steps = len(recorder)
        recorder.discard()
        return ScriptedEpisode(seed, stages, steps, None)

    def _images(self, obs) -> dict:
        """The observation's images by the dataset's camera names."""
        return {self.names[r]: img for r, img in obs.images.items()}

    def _drive(self, obs, steps: int, recorder: EpisodeRecorder, on_step):
        """The takeover's policy acts for `steps` steps (fewer if it reaches every stage), recorded; returns the
        observation the expert takes over from."""
        from harmowam_core.workers import deterministic_cpu

        self.actor.reset(self.env)
        with deterministic_cpu():  # the same episode whatever the worker count
            for _ in range(steps):
                action = self.actor.act(obs)
                recorder.add_frame(action, obs.state, self._images(obs))
                obs = self.env.step(action)
                if on_step is not None:
                    on_step()
                if all(self.env.stage_success()):
                    break
        return obs

    def close(self) -> None:
        try:
            if self.actor is not None:
                self.actor.policy.close()
        finally:
            self.env.close()


def collect(
    recipe: Recipe,
    out: Path,
    episodes: int,
    *,
    ood: str = "none",
    seed: int | None = None,
    keep_failures: bool = False,
    teleop: str = "scripted",
    on_progress: Callable[[CollectStats], None] | None = None,
    backend: str = "sim",
    station: Path | None = None,
    dry_run: bool = False,
    workers: int | None = 1,
    shard: tuple[int, int] = (0, 1),
    detour: float = 0.0,
    takeover: Takeover | None = None,
) -> CollectStats:
    """Record `episodes` episodes (this shard's share of them with `shard`) into the dataset at `out`; see the
    module docstring for seeds, workers and crash safety. `detour`: the scripted expert's probability of a
    recovery detour before each eligible waypoint (`envs.sim.tasks.base.WaypointFollower`; scripted simulator
    collection only); the frames of each episode's detours are recorded in its `detours` column. `takeover`: a
    learned policy drives each scene first (module docstring). Raises HarmoWAMError on a user's mistake."""
    from harmowam_core.envs.sim.teleop import TELEOP_KINDS

    real = backend == "real"
    if real and teleop == "scripted":
        raise HarmoWAMError("the real station has no scripted expert: pass --teleop spacemouse or keyboard")
    if teleop not in TELEOP_KINDS:
        raise ParameterError("teleop", f"must be one of {', '.join(TELEOP_KINDS)}, got '{teleop}'")
    check_protocol(ood)
    if episodes < 1:
        raise ParameterError("episodes", f"must be at least 1, got {episodes}")
    if seed is not None and seed < 0:
        raise ParameterError("seed", f"must be at least 0, got {seed}")
    episodes = shard_share(episodes, shard)
    scripted_sim = teleop == "scripted" and not real
    check_detour(detour, scripted_sim)
    if takeover is not None:
        check_takeover(takeover, recipe, scripted_sim)
    if not scripted_sim and workers is not None and workers > 1:
        raise ParameterError(
            "workers", "applies to scripted collection in the simulator; an operator drives one station"
        )
    model = bundle_bytes(takeover.bundle) if takeover is not None else 0  # each worker holds the policy
    workers = check_workers(workers, episodes, simulator=scripted_sim, model_bytes=model)
    stats = CollectStats(stage_counts=[0] * len(recipe.stages), workers=workers)
    max_attempts = episodes if keep_failures else ATTEMPTS_PER_EPISODE * episodes
    start = time.perf_counter()
    with DatasetWriter(
        out,
        dataset_spec(recipe, "franka_fr3" if real else "franka_sim"),
        task_name=recipe.name,
        stage_names=[s.name for s in recipe.stages],
        recipe=recipe.to_dict(resolved=False),
    ) as writer:
        unknown = unknown_seeds(writer.rows) if not real else 0  # the real station's rows have none
        seeds = plan_seeds(seed, shard, used_seeds(writer.rows, ood), max_attempts, out, unknown)
        if scripted_sim:
            args = (recipe, writer.spec, writer.staging_root, ood, keep_failures, detour)  # the recorder's (RECORDER)
            args += (takeover,) if takeover is not None else ()
            _collect_scripted(args, writer, episodes, seeds, max_attempts, workers, stats, on_progress, start)
        else:
            _collect_teleop(recipe, writer, episodes, ood, teleop, keep_failures, seeds, stats, on_progress, start,
                            real, station, dry_run)  # fmt: skip
    stats.seconds = time.perf_counter() - start
    return stats


def _count(stats: CollectStats, stages: list[bool], steps: int, policy_finished: bool = False) -> None:
    stats.attempted += 1
    stats.steps += steps
    if policy_finished:  # the expert did nothing: neither a success nor a failure of the expert's
        stats.policy_finished += 1
        return
    for k, ok in enumerate(stages):
        stats.stage_counts[k] += int(ok)
    stats.successes += int(all(stages))


def _collect_scripted(args, writer, episodes, seeds, max_attempts, workers, stats, on_progress, start) -> None:
    """Scripted episodes in this process (one worker) or in `workers` simulator processes (each recording with
    `RECORDER(*args)`), committed in seed order: the first `episodes` kept attempts among the first `max_attempts`
    seeds, whatever the worker count."""

    def progress() -> None:
        stats.seconds = time.perf_counter() - start
        if on_progress is not None:
            on_progress(stats)

    order = list(itertools.islice(seeds, max_attempts))
    finished: dict[int, ScriptedEpisode] = {}
    head = 0  # index into `order` of the next attempt to commit

    def commit_ready(gaps: bool = False) -> None:
        """Commit finished attempts in seed order; with `gaps` (Ctrl-C) also those after one still running."""
        nonlocal head
        while head < len(order) and stats.saved < episodes:
            seed = order[head]
            head += 1
            if seed not in finished:
                if gaps:
                    continue
                head -= 1
                return
            episode = finished.pop(seed)
            _count(stats, episode.stages, episode.steps, episode.policy_finished)
            if episode.staged is not None:
                writer.commit(episode.staged)
                stats.saved += 1
                stats.seeds.append(episode.seed)
            progress()

    def failed(seed: int | None, err: BaseException) -> HarmoWAMError:
        what = err.describe() if isinstance(err, WorkerError) else f"{type(err).__name__}: {err}"
        if seed is None:  # a worker died outside any episode
            return HarmoWAMError(f"{what}; the {stats.saved} episode(s) collected are saved in {writer.root}")
        where = f"; the {stats.saved} episode(s) before it are saved in {writer.root}"
        return HarmoWAMError(f"the episode of seed {seed} failed: {what}{where}")

    try:
        if workers == 1:
            with ExitStack() as stack, sigterm_as_interrupt():
                state = resolve(RECORDER)(*args)
                stack.callback(state.close)
                for seed in order:
                    if stats.saved >= episodes:
                        break
                    try:
                        finished[seed] = state.run(seed)
                    except KeyboardInterrupt:
                        raise
                    except Exception as err:  # noqa: BLE001 - one line naming the seed, as from a worker
                        raise failed(seed, err) from err
                    commit_ready()
            return
        with sigterm_as_interrupt(), WorkerPool(workers, RECORDER, args) as pool:
            try:
                _run_pool(pool, order, finished, episodes, stats, commit_ready, failed, lambda: head)
            except KeyboardInterrupt:
                finished.update(pool.drain())  # results that arrived while we were interrupted
                raise
    except KeyboardInterrupt:
        stats.interrupted = True
        commit_ready(gaps=True)  # every finished episode is kept, in seed order
    finally:
        for episode in finished.values():  # attempts not needed any more (or after an error)
            if episode.staged is not None:
                episode.staged.discard()


def _run_pool(pool, order, finished, episodes, stats, commit_ready, failed, head) -> None:
    """Feed seeds to the workers while kept episodes may still be missing; commit as results arrive."""
    queued = iter(order)
    failure: WorkerError | None = None
    while stats.saved < episodes:
        kept_waiting = sum(e.staged is not None for e in finished.values())
        while failure is None and stats.saved + pool.outstanding + kept_waiting < episodes:  # still needed
            seed = next(queued, None)
            if seed is None:
                break
            pool.submit(seed, seed)
        if failure is not None and all(s in finished for s in order[head() : order.index(failure.key)]):
            commit_ready()  # the episodes before the failed one, as one worker would have kept them
            raise failed(failure.key, failure) from None
        if pool.outstanding == 0:
            return
        try:
            seed, episode = pool.next_result()
        except WorkerError as err:
            if err.key is None:  # a worker died outside any job: nothing to wait for
                commit_ready()
                raise failed(None, err) from None
            if failure is None or order.index(err.key) < order.index(failure.key):
                failure = err
            continue
        finished[seed] = episode
        commit_ready()


def _collect_teleop(
    recipe, writer, episodes, ood, teleop, keep_failures, seeds, stats, on_progress, start, real, station, dry_run
) -> None:
    """An operator drives: a device on the simulated station, or a SpaceMouse / keyboard on the real one."""
    from harmowam_core.envs.sim.teleop import DeviceTeleop, open_device

    names = {c.role: c.name for c in recipe.cameras}
    device = None
    with ExitStack() as stack:
        env = stack.enter_context(_real_station(recipe, station, dry_run) if real else make_env(recipe))
        max_attempts = episodes if keep_failures else ATTEMPTS_PER_EPISODE * episodes
        if real:
            from harmowam_core.envs.real.teleop import open_teleop

            device = open_teleop(teleop, env.station)
            stack.callback(device.close)
            if hasattr(device.devices, "ask"):  # keyboard teleop owns the terminal: questions go through it
                env.confirm = device.devices.ask
            max_attempts = 100 * episodes  # the operator keeps or discards each episode; they stop with Ctrl-C
        while stats.saved < episodes and stats.attempted < max_attempts:
            recorder = writer.episode(task=recipe.instruction)
            seed = next(seeds)
            steps = 0
            try:
                obs = env.reset(seed=seed, ood=ood)
                if real:
                    device.stopped = False
                    pilot = device
                else:
                    device = device or open_device(teleop, env)
                    pilot = DeviceTeleop(device, env.num_arms, recipe.fps)
                after = 0
                for _ in range(recipe.max_episode_steps):
                    action = pilot.act(obs)
                    if getattr(pilot, "stopped", False):
                        break
                    recorder.add_frame(action, obs.state, {names[r]: img for r, img in obs.images.items()})
                    obs = env.step(action)
                    steps += 1
                    if all(env.stage_success()):
                        after += 1
                        if after > SETTLE_FRAMES:
                            break
                    if on_progress is not None and steps % 10 == 0:
                        stats.seconds = time.perf_counter() - start
                        on_progress(stats)
            except KeyboardInterrupt:
                recorder.discard()
                stats.interrupted = True
                break
            stages = env.end_episode() if real else env.stage_success()
            _count(stats, stages, steps)
            if len(recorder) == 0:  # ended before the first step (an operator's early stop)
                recorder.discard()
            elif env.confirm("keep this episode?") if real else (all(stages) or keep_failures):
                # the real station's scene is not the simulator's: its seed means nothing, so none is recorded
                recorder.save(stage_success=stages, seed=None if real else seed, ood=None if real else ood)
                stats.saved += 1
                if not real:
                    stats.seeds.append(seed)
            else:
                recorder.discard()
            stats.seconds = time.perf_counter() - start
            if on_progress is not None:
                on_progress(stats)


def _real_station(recipe: Recipe, station: Path | None, dry_run: bool):
    from harmowam_core.envs.real.config import load_station_config
    from harmowam_core.envs.real.station import RealStation

    # the keyboard pilot reads the terminal itself: the station must not watch it for Enter
    return RealStation(recipe, load_station_config(station), dry_run=dry_run, watch_enter=False)
