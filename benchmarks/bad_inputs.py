"""Generated bad `harmowam` command lines, N of them (default 10,000): how many end in a traceback, an exit code
other than 2, an error of more than one line, or reach the command's heavy work (accepted).

    python benchmarks/bad_inputs.py [--n 10000] [--seed 0] [--show 5] [--keep DIR]

The command lines come from the generator tests/test_bad_inputs.py samples (`tests/bad_cli.py`): each is a valid
command line of a command that checks its inputs before any heavy work, with one mistake (a path that does not
exist, is a file or is the wrong kind of folder; a negative, zero, too large or non-numeric number; an unknown
router, OOD protocol, backend, phase or recipe; a malformed or out-of-range --set; an empty dataset or one whose
videos are shorter than its episodes; an unknown option or a missing argument). Each runs in-process (typer's
CliRunner) in a scratch workspace, with every command's heavy work replaced by a refusal. Prints the counts per
command and the first --show failures of each kind; exits 1 if anything failed. Target: 0 of every kind.
About 25 invocations a second on 2 cores, after a workspace of about 10 s.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import typer  # noqa: E402
from bad_cli import bad_invocations, build_workspace, heavy_work_refused, run_invocation  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from harmowam_cli.main import app  # noqa: E402

COMMANDS = set(typer.main.get_command(app).commands)
KINDS = ("tracebacks", "exit codes other than 2", "multi-line errors", "accepted")


def classify(outcome) -> str | None:
    """The first thing wrong with an outcome (one of KINDS), or None."""
    if outcome.traceback is not None:
        return "tracebacks"
    if outcome.accepted:
        return "accepted"
    if outcome.exit_code != 2:
        return "exit codes other than 2"
    if not outcome.one_line:
        return "multi-line errors"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="invocations to generate and run")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (the same seed, the same lines)")
    parser.add_argument("--show", type=int, default=3, help="failures shown of each kind")
    parser.add_argument("--keep", type=Path, default=None, help="build the workspace here and keep it")
    args = parser.parse_args()
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")

    scratch = None
    if args.keep is None:
        scratch = tempfile.TemporaryDirectory(prefix="harmowam-bad-inputs-")
        root = Path(scratch.name) / "ws"
    else:
        root = args.keep
    start = time.perf_counter()
    ws = build_workspace(root)
    built = time.perf_counter() - start

    failures: dict[str, list] = {kind: [] for kind in KINDS}
    per_command: collections.Counter = collections.Counter()
    failed_per_command: collections.Counter = collections.Counter()
    runs = 0

    @seed(args.seed)
    @settings(
        max_examples=args.n,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: every invocation counts once
        suppress_health_check=list(HealthCheck),
    )
    @given(bad_invocations(ws))
    def one(argv: list[str]) -> None:
        nonlocal runs
        runs += 1
        outcome = run_invocation(argv, ws.root)
        command = argv[0] if argv and argv[0] in COMMANDS else "(usage)"
        per_command[command] += 1
        kind = classify(outcome)
        if kind is not None:
            failures[kind].append(outcome)
            failed_per_command[command] += 1
        if runs % 500 == 0:
            print(f"  {runs} invocations, {sum(map(len, failures.values()))} failed", file=sys.stderr, flush=True)

    start = time.perf_counter()
    with heavy_work_refused():
        one()
    seconds = time.perf_counter() - start

    print(f"workspace built in {built:.1f} s; {runs} invocations in {seconds:.1f} s ({runs / seconds:.1f}/s)")
    print(f"{'command':<16}{'invocations':>12}{'failed':>8}")
    for command, count in sorted(per_command.items()):
        print(f"{command:<16}{count:>12}{failed_per_command[command]:>8}")
    print(f"invocations: {runs}")
    for kind in KINDS:
        print(f"{kind}: {len(failures[kind])}")
    for kind in KINDS:
        for outcome in failures[kind][: args.show]:
            print(f"\n--- {kind}: {outcome.describe()[-2000:]}")
    if scratch is not None:
        scratch.cleanup()
    return 1 if any(failures.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
