"""Evaluation step time when every step renders the cameras against rendering only the frames the policy reads
(`HarmoWAMPolicy.needs_images`, `SimStation.step(images=False)`), measured in one run on the same scenes.

    python benchmarks/bench_render.py [--bundle bundles/NAME] [--task pour_coke] [--episodes 2] [--max-steps 120]

Without --bundle it exports an untrained tiny bundle for the task (the step time does not depend on the
weights; an untrained policy runs every episode to --max-steps). One simulator in this process, the gate
router, no video (a video shows every frame, so it renders every step either way). Prints seconds per step of
each mode, their ratio and whether every executed action was the same (the digest of each episode's actions).
Target on this 2-core CPU with the recipe's three 96 x 96 cameras: >= 1.5x fewer seconds per step, identical
actions.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from harmowam_cli._common import quiet_libraries
from harmowam_core.config import load_recipe
from harmowam_core.envs import make_env
from harmowam_core.evaluation.rollout import PolicyActor, run_episode
from harmowam_core.policy.bundle import bundle_recipe, export_bundle, untrained_run
from harmowam_core.policy.policy import HarmoWAMPolicy
from harmowam_core.workers import deterministic_cpu


class EveryFrame(PolicyActor):
    """The policy's actor, asking for every step's images (rendering as before `needs_images`)."""

    def needs_images(self) -> bool:
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--task", default="pour_coke")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=120)
    args = parser.parse_args()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle
        if bundle is None:
            recipe = load_recipe(args.task)
            bundle = export_bundle(untrained_run(Path(tmp) / "runs" / recipe.name, recipe), Path(tmp) / "b", "tiny")
        recipe = bundle_recipe(bundle)
        cams = ", ".join(f"{c.role} {c.width}x{c.height}" for c in recipe.cameras)
        print(f"bundle {bundle}; {args.episodes} episodes of {args.max_steps} steps, seeds 1000..; cameras {cams}")
        seconds, digests = {}, {}
        with make_env(recipe) as env, HarmoWAMPolicy.from_bundle(bundle, router="gate") as policy:
            run_episode(env, PolicyActor(policy), seed=999, max_steps=12)  # warm-up: compilation, caches
            for mode, actor in (("every step", EveryFrame(policy)), ("as needed", PolicyActor(policy))):
                steps, start, digests[mode] = 0, time.perf_counter(), []
                for i in range(args.episodes):
                    with deterministic_cpu():
                        result = run_episode(env, actor, seed=1000 + i, max_steps=args.max_steps)
                    steps += result.steps
                    digests[mode].append(result.action_digest)
                seconds[mode] = (time.perf_counter() - start) / steps
                print(f"render {mode:>10}: {1000 * seconds[mode]:6.1f} ms per step ({steps} steps)")
        print(f"speed-up: {seconds['every step'] / seconds['as needed']:.2f}x  (target >= 1.5x)")
        print(f"identical actions: {'yes' if digests['every step'] == digests['as needed'] else 'NO'}")


if __name__ == "__main__":
    main()
