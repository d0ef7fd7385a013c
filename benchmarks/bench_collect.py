"""Collection throughput against the raw simulator, and with one worker against several, measured in one run.

    python benchmarks/bench_collect.py [--task stack_cans] [--steps 300] [--episodes 6] [--workers 2]

Prints raw robosuite steps/s (env.step with the recipe's cameras rendered at the recipe's resolution, zero
actions), `harmowam collect` steps/s on the same task (scripted expert, dataset writing and video encoding
included) and their ratio. Target: ratio >= 0.85.

Then collects the same --episodes scripted episodes (seeds 0.., failures kept, each episode at most --steps
steps) with `workers=1` and with `workers=N`, and prints the steps/s of each (worker start-up included), the
speed-up, and whether the two datasets are identical (actions, states, seeds and every decoded video frame).
Target on a 2-core machine: speed-up >= 1.7x with 2 workers, identical datasets.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from harmowam_core.collect import collect
from harmowam_core.config import load_recipe
from harmowam_core.data.reader import DatasetReader
from harmowam_core.envs.sim.station import SimStation


def raw_steps_per_second(recipe, steps: int) -> float:
    with SimStation(recipe) as station:
        station.reset(seed=0)
        env = station.raw_env
        action = np.zeros(env.action_spec[0].shape)
        env.step(action)
        start = time.perf_counter()
        for _ in range(steps):
            env.step(action)
        return steps / (time.perf_counter() - start)


def same_datasets(a: Path, b: Path) -> bool:
    ra, rb = DatasetReader(a), DatasetReader(b)
    if ra.num_episodes != rb.num_episodes or [r["seed"] for r in ra.episodes] != [r["seed"] for r in rb.episodes]:
        return False
    if not (np.array_equal(ra.action, rb.action) and np.array_equal(ra.state, rb.state)):
        return False
    return all(
        np.array_equal(ra.frames(ep, cam, range(ra.lengths[ep])), rb.frames(ep, cam, range(rb.lengths[ep])))
        for ep in range(ra.num_episodes)
        for cam in ra.cameras
    )


def workers_comparison(recipe, episodes: int, workers: int) -> None:
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, workers):
            stats = collect(recipe, Path(tmp) / f"w{n}", episodes, keep_failures=True, workers=n)
            rates[n] = stats.steps_per_second
            print(f"collect, {n} worker(s):   {rates[n]:8.1f} steps/s  ({stats.saved} episodes, {stats.steps} steps)")
        same = same_datasets(Path(tmp) / "w1", Path(tmp) / f"w{workers}")
    print(f"speed-up with {workers} workers: {rates[workers] / rates[1]:.2f}x  (target >= 1.7x)")
    print(f"identical datasets: {'yes' if same else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="stack_cans")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    recipe = load_recipe(args.task)
    raw = raw_steps_per_second(recipe, args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        recipe.max_episode_steps = args.steps
        stats = collect(recipe, Path(tmp) / "data", episodes=1, keep_failures=True)
    ours = stats.steps_per_second
    cams = ", ".join(f"{c.name} {c.height}x{c.width}" for c in recipe.cameras)
    print(f"task {recipe.name}, cameras {cams}")
    print(f"raw robosuite step+render: {raw:8.1f} steps/s")
    print(f"harmowam collect:          {ours:8.1f} steps/s  ({stats.steps} steps)")
    print(f"ratio: {ours / raw:.2f}  (target >= 0.85)")
    workers_comparison(recipe, args.episodes, args.workers)


if __name__ == "__main__":
    main()
