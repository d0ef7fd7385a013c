"""Evaluation throughput with one simulator worker against several, on the same seeds, measured in one run.

    python benchmarks/bench_eval.py [--bundle bundles/NAME] [--task stack_cans] [--episodes 8] [--max-steps 120]
                                    [--workers 2]

Without --bundle it exports an untrained tiny bundle for the task (throughput does not depend on the weights;
an untrained policy runs every episode to --max-steps, so every episode costs the same). Runs `evaluate` (the
gate router, videos recorded, as `harmowam eval` does by default) on seeds 1000.. with `workers=1`, then with
`workers=N`, and prints episodes/minute of each (worker start-up and bundle loading included), their ratio and
whether the per-episode results (stages, steps, experts used, the digest of every executed action) are
identical. Target on a 2-core machine: speed-up >= 1.7x with 2 workers, identical results.
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
from harmowam_core.evaluation.runner import evaluate
from harmowam_core.policy.bundle import export_bundle, untrained_run
from harmowam_core.workers import available_cores


def comparable(report) -> list[dict]:
    return [{k: v for k, v in r.to_dict().items() if k not in ("seconds", "video")} for r in report.results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--task", default="stack_cans")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle
        if bundle is None:
            recipe = load_recipe(args.task)
            bundle = export_bundle(untrained_run(Path(tmp) / "runs" / recipe.name, recipe), Path(tmp) / "b", "tiny")
        print(f"bundle {bundle}; {args.episodes} episodes of {args.max_steps} steps, seeds 1000..; "
              f"{available_cores()} cores")  # fmt: skip
        rates, reports = {}, {}
        for workers in (1, args.workers):
            start = time.perf_counter()
            reports[workers] = evaluate(
                bundle, ["none"], ["gate"], args.episodes, 1000, Path(tmp) / f"eval{workers}",
                max_steps=args.max_steps, workers=workers,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            rates[workers] = 60.0 * args.episodes / seconds
            print(f"workers {workers}: {seconds:7.1f} s  {rates[workers]:6.2f} episodes/min")
        same = comparable(reports[1]) == comparable(reports[args.workers])
        print(f"speed-up with {args.workers} workers: {rates[args.workers] / rates[1]:.2f}x  (target >= 1.7x)")
        print(f"identical per-episode results: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
