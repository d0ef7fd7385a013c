"""Closed-loop policy throughput, synchronous against async, and the latency of each part, in one run.

    python benchmarks/bench_policy.py [--bundle bundles/NAME] [--task stack_cans] [--steps 240] [--device cpu]

Without --bundle it exports an untrained tiny bundle for the task (latency does not depend on the weights).
Prints:
- the latency of one plan's parts (world model, image encoder, gate, predictive expert, reactive expert);
- executed actions/s on an *instant station* (returns a recorded observation at once): what the policy
  alone sustains;
- executed actions/s on a *paced station*: a station that takes exactly one control period (1 / the recipe's
  fps) per step and returns a recorded observation, as a real arm does. Sync plans between steps; async plans
  in the background. The share of the model's latency that async hides is
  1 - (async wall - stepping wall) / (sync wall - stepping wall). Target for the tiny preset on the CPU:
  at least 20 actions/s async.
- executed actions/s on the simulated station (rendering three cameras), sync and async, for reference.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch

from harmowam_cli._common import quiet_libraries
from harmowam_core.envs import make_env
from harmowam_core.policy.bundle import bundle_recipe, export_bundle, untrained_run
from harmowam_core.policy.policy import HarmoWAMPolicy
from harmowam_core.recipes import load_recipe


class PacedStation:
    """Steps take one control period, like a real arm at the control rate; the observation is a recorded one."""

    def __init__(self, obs, fps: int, stages: int):
        self.obs, self.period, self.stages = obs, 1.0 / fps, stages

    def reset(self, seed=None, ood="none"):
        self.next_tick = time.perf_counter() + self.period
        return self.obs

    def step(self, action):
        delay = self.next_tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        self.next_tick = max(self.next_tick, time.perf_counter()) + self.period
        return self.obs

    def stage_success(self):
        return [False] * self.stages


def closed_loop(env, policy, steps: int) -> float:
    """Seconds for `steps` executed actions (policy None: the station alone, zero actions)."""
    obs = env.reset(seed=1000)
    if policy is not None:
        policy.reset()
        policy.act(obs)  # warm-up plan outside the timing (lazy initialisation, first-call allocations)
        policy.reset()
        obs = env.reset(seed=1000)
    dim = 7 * (2 if len(obs.state) == 14 else 1)
    start = time.perf_counter()
    for _ in range(steps):
        obs = env.step(policy.act(obs) if policy is not None else np.zeros(dim))
    return time.perf_counter() - start


def measure(env, bundle, steps: int, device: str) -> dict[str, float]:
    wall = {"station": closed_loop(env, None, steps)}
    for mode in ("sync", "async"):
        with HarmoWAMPolicy.from_bundle(bundle, async_inference=mode == "async", device=device) as policy:
            wall[mode] = closed_loop(env, policy, steps)
    return wall


def report(name: str, wall: dict[str, float], steps: int) -> None:
    print(f"{name}:")
    print(f"  station alone         {steps / wall['station']:7.1f} steps/s")
    print(f"  sync                  {steps / wall['sync']:7.1f} actions/s")
    print(f"  async                 {steps / wall['async']:7.1f} actions/s  ({wall['sync'] / wall['async']:.2f}x sync)")
    overhead = wall["sync"] - wall["station"]
    if wall["station"] < 0.1 * wall["sync"]:  # an instant station: nothing to hide the model's latency behind
        return
    if overhead < 0.05 * wall["station"]:
        print("  model latency hidden     n/a (the model's share is within the station's own variation)")
        return
    hidden = 1.0 - (wall["async"] - wall["station"]) / overhead
    print(f"  model latency hidden  {100 * hidden:7.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--task", default="stack_cans")
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--plans", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hz", type=int, help="control rate of the paced station (default: the recipe's fps)")
    parser.add_argument("--no-sim", action="store_true", help="skip the simulated-station figures")
    args = parser.parse_args()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle
        if bundle is None:
            recipe = load_recipe(args.task)
            run = untrained_run(Path(tmp) / "runs" / recipe.name, recipe)
            bundle = export_bundle(run, Path(tmp) / "bundles", name="untrained")
        recipe = bundle_recipe(bundle)
        print(f"bundle {bundle} ({recipe.name}, {recipe.model.preset}), device {args.device}, "
              f"torch threads {torch.get_num_threads()}")  # fmt: skip
        with make_env(recipe) as sim:
            obs = sim.reset(seed=1000)
            with HarmoWAMPolicy.from_bundle(bundle, device=args.device) as policy:
                policy.plan(obs.images, obs.state, obs.instruction)
                policy.reset()
                start = time.perf_counter()
                for _ in range(args.plans):
                    policy.plan(obs.images, obs.state, obs.instruction)
                total = (time.perf_counter() - start) / args.plans
                print(f"one plan ({policy.denoising_steps} world-model denoising steps): {1000 * total:.1f} ms")
                for part, seconds in policy.timings.items():
                    print(f"  {part:18s} {1000 * seconds / args.plans:7.1f} ms")
            instant = PacedStation(obs, 10**9, len(recipe.stages))
            report("instant station (the policy alone)", measure(instant, bundle, args.steps, args.device), args.steps)
            hz = args.hz or recipe.fps
            paced = PacedStation(obs, hz, len(recipe.stages))
            report(f"station paced at {hz} Hz", measure(paced, bundle, args.steps, args.device), args.steps)
            if not args.no_sim:
                report("simulated station", measure(sim, bundle, args.steps, args.device), args.steps)


if __name__ == "__main__":
    main()
