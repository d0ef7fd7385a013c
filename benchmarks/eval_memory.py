"""Memory of a long evaluation: 200 consecutive episodes in one process must not grow its resident memory.

    python benchmarks/eval_memory.py [--bundle bundles/NAME] [--task stack_cans] [--episodes 200]
                                     [--max-steps 20] [--protocols none,objects]

Without --bundle it exports an untrained tiny bundle for the task. Plays the episodes in this process with one
`EvalSession` (what `harmowam eval` runs in each worker: the gate and predictive routers and the scripted
expert, no videos), cycling through the protocols episode by episode so that the scene is rebuilt again and
again (`objects` builds its own robosuite scene: the path most likely to leak), and reads this process's
resident set size (psutil) after every episode. Prints it after episodes 10, 50, 100, ..., the last, and the
ratio of the last to the 10th. Target
(issue 22, item 4): within 10 % (ratio <= 1.10).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import psutil

from harmowam_cli._common import quiet_libraries
from harmowam_core.config import load_recipe
from harmowam_core.evaluation.runner import EvalSession
from harmowam_core.policy.bundle import export_bundle, untrained_run

WARM_UP = 10  # episodes before the reference reading: libraries load, caches fill
TARGET = 1.10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--task", default="stack_cans")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--protocols", default="none,objects")
    args = parser.parse_args()
    if args.episodes <= WARM_UP:
        parser.error(f"--episodes must be above {WARM_UP}: the reference reading is taken after episode {WARM_UP}")
    quiet_libraries()
    protocols = args.protocols.split(",")
    process = psutil.Process()
    rss: list[int] = []

    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle
        if bundle is None:
            recipe = load_recipe(args.task)
            bundle = export_bundle(untrained_run(Path(tmp) / "runs" / recipe.name, recipe), Path(tmp) / "b", "tiny")
        actors = ["gate", "predictive", "scripted"]
        session = EvalSession(bundle, actors[:2], True, 1000, max_steps=args.max_steps)
        print(f"bundle {bundle}; {args.episodes} episodes of {args.max_steps} steps in one process, "
              f"cycling through {protocols} and {actors}")  # fmt: skip
        try:
            for done in range(1, args.episodes + 1):
                k = done - 1
                session.run((protocols[k % len(protocols)], k // len(protocols), actors[k % len(actors)], None, None))
                rss.append(process.memory_info().rss)
                if done == WARM_UP or done % 50 == 0 or done == args.episodes:
                    print(f"episode {done:4d}/{args.episodes}: RSS {rss[-1] / 2**20:8.1f} MiB", flush=True)
        finally:
            session.close()
    ratio = rss[-1] / rss[WARM_UP - 1]
    peak = max(rss[WARM_UP - 1 :]) / rss[WARM_UP - 1]
    verdict = "PASS" if ratio <= TARGET and peak <= TARGET else "FAIL"
    print(f"RSS after the last episode / after episode {WARM_UP}: {ratio:.3f} (peak {peak:.3f}); "
          f"target <= {TARGET:.2f}: {verdict}")  # fmt: skip
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
