"""Generated policy outputs through the real station, and an audit of every command the fake franky received:
shared by tests/test_real_station.py and benchmarks/real_station_limits.py.

    station, franky = open_station("stack_cans", single_station(control_hz=1000), confirm=lambda q: True,
                                   franky=FakeFranky(follow=True))
    figures = feed(station, franky, policy_outputs(10_000, seed=0), stall_every=2_000)
    counts = audit(franky.calls, station.station.arms[0])     # every count in VIOLATIONS must be 0

`policy_outputs` draws runs of one kind each (KINDS): random outputs, NaN, inf, huge values (up to 1e12), a
gripper flickering between open and closed, alternating +-extremes every step, and one value stuck for the
whole run (which drives the arm into the workspace walls). `feed` steps the station with them as a policy
would (a refused NaN/inf output is counted and the loop goes on; an episode the operator ended is scored and
reset), missing the watchdog's deadline every `stall_every` outputs. `audit` replays the recorded moves and
counts the commands outside the workspace box, over the per-step limit, over the step-to-step limit, and the
gripper changes closer together than `gripper.min_hold_steps`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import numpy as np

from harmowam_core.envs.real.config import ArmConfig
from harmowam_core.envs.real.safety import UnsafeCommand
from harmowam_core.geometry import mat_to_rotvec, quat_to_mat

KINDS = ("random", "nan", "inf", "huge", "flickering gripper", "alternating extremes", "stuck")
VIOLATIONS = (
    "outside the workspace box",
    "over the per-step limit",
    "over the step-to-step limit",
    "gripper changes within the minimum hold",
)


def policy_outputs(n: int, seed: int = 0, num_arms: int = 1, longest_run: int = 60) -> Iterator[tuple[str, np.ndarray]]:
    """`n` (kind, action (7 * num_arms,)) pairs: runs of 1..`longest_run` outputs of one kind each, seeded."""
    rng = np.random.default_rng(seed)
    size = 7 * num_arms
    made = 0
    while made < n:
        kind = KINDS[rng.integers(len(KINDS))]
        held = rng.normal(0.0, 0.05, size)  # the run's stuck value; its signs are the alternating extremes'
        held[6::7] = rng.uniform(0.0, 1.0, num_arms)
        for t in range(min(int(rng.integers(1, longest_run + 1)), n - made)):
            yield kind, _output(kind, t, rng, held)
            made += 1


def _output(kind: str, t: int, rng: np.random.Generator, held: np.ndarray) -> np.ndarray:
    action = rng.normal(0.0, 0.05, held.size)
    action[6::7] = rng.uniform(0.0, 1.0, held.size // 7)
    if kind in ("nan", "inf"):
        bad = rng.choice(held.size, size=int(rng.integers(1, 4)), replace=False)
        action[bad] = np.nan if kind == "nan" else rng.choice([-np.inf, np.inf], size=bad.size)
    elif kind == "huge":
        action = rng.choice([-1.0, 1.0], size=held.size) * 10.0 ** rng.uniform(2, 12, size=held.size)
    elif kind == "flickering gripper":
        action[6::7] = [1.0, 0.0, 0.55, 0.45][t % 4] if rng.random() < 0.5 else float(t % 2)
    elif kind == "alternating extremes":
        action = np.sign(held) * (1.0 if t % 2 == 0 else -1.0)
        action[6::7] = float(t % 2)
    elif kind == "stuck":
        action = held.copy()
    return action


def feed(station, franky, outputs, stall_every: int = 0) -> dict[str, int]:
    """Step `station` (a RealStation on `franky`, a FakeFranky) with `outputs` ((kind, action) pairs); every
    `stall_every` outputs the policy stalls past the watchdog's deadline first. Returns the figures: outputs
    fed (and per kind), outputs refused, stalls, watchdog stops (a stall the watchdog answered with a stop),
    reflex stops, episodes."""
    figures = Counter()
    station.reset()
    figures["episodes"] = 1
    for kind, action in outputs:
        if stall_every and figures["outputs fed"] and figures["outputs fed"] % stall_every == 0:
            figures["stalls"] += 1
            figures["watchdog stops"] += _stall(station, franky)
        figures["outputs fed"] += 1
        figures[f"outputs: {kind}"] += 1
        try:
            station.step(action)
        except UnsafeCommand:
            figures["outputs refused (NaN, inf)"] += 1
        if station.operator_ended:
            station.end_episode()
            station.reset()
            figures["episodes"] += 1
    figures["reflex stops"] = station.reflexes
    return dict(figures)


def _stall(station, franky, timeout: float = 5.0) -> int:
    """Miss the deadline: 1 when the watchdog expired and stopped the arm meanwhile."""
    stops = sum(c[0] == "stop" for c in franky.calls)
    deadline = time.monotonic() + timeout
    while not station.watchdog.expired and time.monotonic() < deadline:
        time.sleep(station.station.watchdog_s / 4)
    return int(station.watchdog.expired and sum(c[0] == "stop" for c in franky.calls) > stops)


def audit(calls: list, arm: ArmConfig, tol: float = 1e-8) -> dict[str, int]:
    """Replay a FakeFranky's calls (one arm): the commands sent and how many break each limit (VIOLATIONS).
    A stop or a recovery puts the arm at rest; a homing move (synchronous) also frees the gripper's hold."""
    counts = Counter(dict.fromkeys(("commands sent", *VIOLATIONS), 0))
    last_step, last_rotvec, since_grip = np.zeros(3), np.zeros(3), None
    for call in calls:
        if call[0] in ("stop", "recover"):
            last_step, last_rotvec = np.zeros(3), np.zeros(3)
        elif call[0] in ("grasp", "open"):
            counts["gripper changes"] += 1
            counts[VIOLATIONS[3]] += since_grip is not None and since_grip < arm.gripper.min_hold_steps
            since_grip = 0
        elif call[0] == "move":
            motion, asynchronous, before = call[1], call[2], call[4]
            if not asynchronous:  # homing
                last_step, last_rotvec, since_grip = np.zeros(3), np.zeros(3), None
                continue
            counts["commands sent"] += 1
            since_grip = None if since_grip is None else since_grip + 1
            target = np.asarray(motion.target.translation, dtype=np.float64)
            step = target - before["translation"]
            rotvec = mat_to_rotvec(_rotation(motion.target.quaternion) @ _rotation(before["quaternion"]).T)
            box = arm.workspace
            counts[VIOLATIONS[0]] += not (
                np.all(target >= np.subtract(box.min, tol)) and np.all(target <= np.add(box.max, tol))
            )
            counts[VIOLATIONS[1]] += bool(
                np.linalg.norm(step) > arm.max_translation + tol or np.linalg.norm(rotvec) > arm.max_rotation + 1e-6
            )
            counts[VIOLATIONS[2]] += bool(
                np.linalg.norm(step - last_step) > arm.max_translation_change + tol
                or np.linalg.norm(rotvec - last_rotvec) > arm.max_rotation_change + 1e-6
            )
            last_step, last_rotvec = step, rotvec
    return dict(counts)


def _rotation(xyzw: np.ndarray) -> np.ndarray:
    x, y, z, w = np.asarray(xyzw, dtype=np.float64)
    return quat_to_mat(np.array([w, x, y, z]))
