"""Generated model overrides, N of them (default 300) or as many as --budget-s allows: how many recipes were
accepted and then trained and planned, how many were rejected cleanly (exit code 2, one line naming the key), and
how many broke the rule (accepted, then failed; or rejected otherwise than in one line).

    python benchmarks/recipe_constraints.py [--n 300] [--budget-s 300] [--seed 0] [--show 5]

The overrides come from the strategy tests/test_recipes.py samples (`tests/model_overrides.py`): the world
model's resolution, patch size, frame count, codec, heads and head dim and conditioning, the experts' widths,
heads, backbones, image sizes and sampling steps, the gate and the action chunk, on a single-arm and a dual-arm
task. Each runs `harmowam recipe show TASK --set ...` in-process; an accepted recipe's models are then built and
put through one training step of each stage and one plan (`model_overrides.exercise`). Prints the counts, the
rejections per key and the first --show failures; exits 1 if anything broke the rule. Target: 0 broken. An
accepted recipe takes 2.5 to 8 s on 2 shared cores, a rejected one 0.05 s; with --budget-s the examples left after
it are still drawn but not tried (about 0.02 s each).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from model_overrides import model_overrides, try_overrides  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="recipes to generate and try")
    parser.add_argument("--budget-s", type=float, default=None, help="stop trying new recipes after this many seconds")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (the same seed, the same recipes)")
    parser.add_argument("--show", type=int, default=5, help="failures shown")
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n: must be at least 1")
    counts: collections.Counter[str] = collections.Counter()
    keys: collections.Counter[str] = collections.Counter()
    failures = []
    start = time.monotonic()
    seconds = {"accepted": 0.0, "rejected": 0.0}

    @seed(args.seed)
    @settings(
        max_examples=args.n,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(drawn=model_overrides())
    def trial(drawn):
        if args.budget_s is not None and time.monotonic() - start > args.budget_s:
            return
        began = time.monotonic()
        outcome = try_overrides(*drawn)
        counts["tried"] += 1
        if outcome.error:
            counts["broke the rule"] += 1
            failures.append(outcome)
        elif outcome.accepted:
            counts["accepted, trained and planned"] += 1
            seconds["accepted"] += time.monotonic() - began
        else:
            counts["rejected in one line"] += 1
            keys[outcome.rejected_key] += 1
            seconds["rejected"] += time.monotonic() - began

    trial()
    elapsed = time.monotonic() - start
    print(f"{counts['tried']} generated recipes in {elapsed:.0f} s (seed {args.seed})")
    for kind in ("accepted, trained and planned", "rejected in one line", "broke the rule"):
        n = counts[kind]
        kind_s = {"accepted, trained and planned": "accepted", "rejected in one line": "rejected"}.get(kind)
        each = f", {seconds[kind_s] / n:.2f} s each" if kind_s and n else ""
        print(f"  {kind:32s} {n:5d}{each}")
    print("rejections by key:")
    for key, n in keys.most_common():
        print(f"  {key:58s} {n:5d}")
    for outcome in failures[: args.show]:
        print("\n" + outcome.describe())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
