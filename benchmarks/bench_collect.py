"""Collection throughput against the raw simulator, measured in one run.

    python benchmarks/bench_collect.py [--task stack_cans] [--steps 300]

Prints raw robosuite steps/s (env.step with the recipe's cameras rendered at the recipe's resolution, zero
actions), `harmowam collect` steps/s on the same task (scripted expert, dataset writing and video encoding
included) and their ratio. Target: ratio >= 0.85.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from harmowam_core.collect import collect
from harmowam_core.envs.sim.station import SimStation
from harmowam_core.recipes import load_recipe


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="stack_cans")
    parser.add_argument("--steps", type=int, default=300)
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


if __name__ == "__main__":
    main()
