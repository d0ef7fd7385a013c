"""Demonstration collection: run a station with the scripted expert, or an operator on an input device, and
record episodes into a dataset.

    result = collect(load_recipe("stack_cans"), Path("data/stack_cans"), episodes=5)

Episodes are saved one by one (crash-safe, see `data.writer`): an interrupt (Ctrl-C) discards only the
episode in progress. Without `keep_failures`, an episode that does not reach every stage is discarded and
another is attempted, up to three attempts per requested episode. A teleoperated episode ends when every
stage has succeeded, when the operator ends it (the device's reset key) or at the recipe's step limit.
On the real station (`backend="real"`) the operator drives with a SpaceMouse or the keyboard, scores the
stages after each episode and keeps or discards it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from harmowam_core.data.format import DatasetSpec
from harmowam_core.data.writer import DatasetWriter
from harmowam_core.envs import OOD_KINDS, make_env
from harmowam_core.errors import HarmoWAMError
from harmowam_core.recipes import Recipe

SETTLE_FRAMES = 5  # frames kept after the last stage succeeds, so demonstrations end at rest


@dataclass
class CollectStats:
    attempted: int = 0
    saved: int = 0
    successes: int = 0
    steps: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    stage_counts: list[int] = field(default_factory=list)  # episodes reaching each stage

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


def collect(
    recipe: Recipe,
    out: Path,
    episodes: int,
    *,
    ood: str = "none",
    seed: int = 0,
    keep_failures: bool = False,
    teleop: str = "scripted",
    on_progress: Callable[[CollectStats], None] | None = None,
    backend: str = "sim",
    station: Path | None = None,
    dry_run: bool = False,
) -> CollectStats:
    from harmowam_core.envs.sim.teleop import TELEOP_KINDS, DeviceTeleop, open_device

    real = backend == "real"
    if real and teleop == "scripted":
        raise HarmoWAMError("the real station has no scripted expert: pass --teleop spacemouse or keyboard")
    if teleop not in TELEOP_KINDS:
        raise HarmoWAMError(f"--teleop must be one of {', '.join(TELEOP_KINDS)}, got '{teleop}'")
    if ood not in OOD_KINDS:
        raise HarmoWAMError(f"unknown OOD protocol '{ood}' (choose from {', '.join(OOD_KINDS)})")
    if episodes < 1:
        raise HarmoWAMError(f"--episodes must be at least 1, got {episodes}")
    stats = CollectStats(stage_counts=[0] * len(recipe.stages))
    names = {c.role: c.name for c in recipe.cameras}
    start = time.perf_counter()
    device = None
    with (
        ExitStack() as stack,
        _real_station(recipe, station, dry_run) if real else make_env(recipe) as env,
        DatasetWriter(
            out,
            dataset_spec(recipe, "franka_fr3" if real else "franka_sim"),
            task_name=recipe.name,
            stage_names=[s.name for s in recipe.stages],
            recipe=recipe.to_dict(resolved=False),
        ) as writer,
    ):
        max_attempts = episodes if keep_failures else 3 * episodes
        if real:
            from harmowam_core.envs.real.teleop import open_teleop

            device = open_teleop(teleop, env.station)
            stack.callback(device.close)
            if hasattr(device.devices, "ask"):  # keyboard teleop owns the terminal: questions go through it
                env.confirm = device.devices.ask
            max_attempts = 100 * episodes  # the operator keeps or discards each episode; they stop with Ctrl-C
        while stats.saved < episodes and stats.attempted < max_attempts:
            recorder = writer.episode(task=recipe.instruction)
            try:
                obs = env.reset(seed=seed + stats.attempted, ood=ood)
                if teleop == "scripted":
                    pilot = env.expert()
                elif real:
                    device.stopped = False
                    pilot = device
                else:
                    device = device or open_device(teleop, env)
                    pilot = DeviceTeleop(device, env.num_arms, recipe.fps)
                after = 0
                for _ in range(recipe.max_episode_steps):
                    action = pilot.act() if teleop == "scripted" else pilot.act(obs)
                    if getattr(pilot, "stopped", False):
                        break
                    recorder.add_frame(action, obs.state, {names[r]: img for r, img in obs.images.items()})
                    obs = env.step(action)
                    stats.steps += 1
                    if all(env.stage_success()):
                        after += 1
                        if after > SETTLE_FRAMES:
                            break
                    if on_progress is not None and stats.steps % 10 == 0:
                        stats.seconds = time.perf_counter() - start
                        on_progress(stats)
            except KeyboardInterrupt:
                recorder.discard()
                stats.interrupted = True
                break
            stages = env.end_episode() if real else env.stage_success()
            stats.attempted += 1
            for k, ok in enumerate(stages):
                stats.stage_counts[k] += int(ok)
            success = all(stages)
            stats.successes += int(success)
            if len(recorder) == 0:  # ended before the first step (an operator's early stop)
                recorder.discard()
            elif env.confirm("keep this episode?") if real else (success or keep_failures):
                recorder.save(stage_success=stages)
                stats.saved += 1
            else:
                recorder.discard()
            stats.seconds = time.perf_counter() - start
            if on_progress is not None:
                on_progress(stats)
    stats.seconds = time.perf_counter() - start
    return stats


def _real_station(recipe: Recipe, station: Path | None, dry_run: bool):
    from harmowam_core.envs.real.config import load_station_config
    from harmowam_core.envs.real.station import RealStation

    # the keyboard pilot reads the terminal itself: the station must not watch it for Enter
    return RealStation(recipe, load_station_config(station), dry_run=dry_run, watch_enter=False)
