"""Generated policy outputs, N of them (default 10,000), through the real station with the fake franky: how many
commands the arm received outside the workspace box, over the per-step limit, over the step-to-step limit (each
must be 0), how often the watchdog stopped the arm on a missed deadline and how many reflexes stopped it.

    python benchmarks/real_station_limits.py [--n 10000] [--seed 0] [--stall-every 2000] [--reflexes 5]

The outputs come from the generator tests/test_real_station.py samples (`tests/real_limits.py`): runs of NaN, inf,
huge values, a flickering gripper, alternating +-extremes, stuck values and random outputs. They go through
`RealStation.step` exactly as a policy's would, on the single-arm station file of the tests at 1000 Hz (the
limits are per control step, so the rate changes nothing but the wall time) with a 0.05 s watchdog; the fake
arm reaches each target at once. Every --stall-every outputs the policy stalls past the deadline; --reflexes
moves, spread over the run, meet a reflex (the operator confirms each recovery). Exits 1 if any command broke
a limit or a stall went unanswered. About 20 s on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes import FakeFranky, open_station, single_station  # noqa: E402
from real_limits import KINDS, VIOLATIONS, audit, feed, policy_outputs  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="policy outputs to generate and feed")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (the same seed, the same outputs)")
    parser.add_argument("--stall-every", type=int, default=2_000, help="outputs between missed deadlines (0: none)")
    parser.add_argument("--reflexes", type=int, default=5, help="moves that meet a reflex, spread over the run")
    args = parser.parse_args()
    if args.n < 1 or args.stall_every < 0 or args.reflexes < 0:
        parser.error("--n must be at least 1, --stall-every and --reflexes at least 0")
    reflex_at = {int(args.n * (k + 0.5) / (args.reflexes + 1)) for k in range(args.reflexes)}
    config = single_station(watchdog_s=0.05, control_hz=1000)
    franky = FakeFranky(follow=True, reflex_at=reflex_at)
    start = time.perf_counter()
    station, franky = open_station("stack_cans", config, franky=franky, confirm=lambda question: True)
    with station:
        figures = feed(station, franky, policy_outputs(args.n, seed=args.seed), stall_every=args.stall_every)
    counts = audit(franky.calls, config.arms[0])
    seconds = time.perf_counter() - start
    arm = config.arms[0]
    print(
        f"real station, fake franky: {arm.max_translation} m / {arm.max_rotation} rad per step, "
        f"{arm.max_translation_change} m / {arm.max_rotation_change} rad step to step, "
        f"gripper hold {arm.gripper.min_hold_steps} steps, seed {args.seed}, {seconds:.1f} s"
    )
    rows = [("outputs fed", figures["outputs fed"], 0)]
    rows += [(kind, figures.get(f"outputs: {kind}", 0), 1) for kind in KINDS]
    rows += [("outputs refused (NaN, inf; arm stopped)", figures.get("outputs refused (NaN, inf)", 0), 0)]
    rows += [("commands sent", counts["commands sent"], 0)] + [(name, counts[name], 1) for name in VIOLATIONS]
    rows += [
        ("gripper changes", counts.get("gripper changes", 0), 0),
        ("missed deadlines (stalls)", figures.get("stalls", 0), 0),
        ("watchdog stops", figures.get("watchdog stops", 0), 0),
        (f"reflex stops (recovered at factor {arm.recovery_dynamics_factor:g})", figures["reflex stops"], 0),
    ]
    for label, value, indent in rows:
        print(f"{'  ' * indent}{label:<{44 - 2 * indent}}{value:>7,}")
    broken = sum(counts[name] for name in VIOLATIONS) + figures.get("stalls", 0) - figures.get("watchdog stops", 0)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
