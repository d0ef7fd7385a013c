"""Crashes at any moment: the real `harmowam` commands killed with SIGKILL at random moments, then the project's own
readers check that nothing committed was lost and nothing half-written is visible.

    python benchmarks/chaos.py [--collect 100] [--label 20] [--export 20] [--checkpoint 20] [--seed 0]
                               [--quick] [--no-disk-full] [--keep DIR]

Each command runs as a subprocess (`python -m harmowam_cli.main ...`) on tiny settings (32 px cameras, 6-step
episodes, the tiny world model at 32 px). A first uninterrupted run measures its duration D; every trial then
kills the command with SIGKILL at a moment drawn uniformly from [0, D] (seeded; a run that ends before its moment
is not counted as a kill, and another trial is drawn). After each kill:

- collect (one dataset, every trial appending to it): the dataset loads (`DatasetReader`) with at least every
  episode seen committed (meta/info.json, polled while the command ran) and every episode of the earlier trials
  unchanged; each episode is whole (its data rows and every camera's video frames decode, its length long); no
  scene seed repeats. The next trial appends to it (so each trial also checks that collecting resumes), and a
  last uninterrupted run must add exactly its episodes.
- label (a copy of the collect dataset, labelled alternately with two settings A and B that give different
  labels): the interaction column of every episode, the keyframes, the label stats and the settings recorded in
  meta/harmowam.json are all A's or all B's, never a mix.
- export (an untrained tiny run, `policy.bundle.untrained_run`): every bundle directory is absent or passes
  `verify_bundle`; no directory under bundles/ holding a bundle.json fails it.
- checkpoint (`train-wm --resume` with a checkpoint at every step, one run directory for every trial): every
  `checkpoints/step_N` directory holds a step.json and files that load (safetensors, torch), or is absent; the
  next trial resumes from it, and a last uninterrupted `--resume` run must finish (exit 0).

A trial whose command exits on its own with an error (it could not resume after the kill before it) is a failure.

Full disk (unless --no-disk-full): a small tmpfs is mounted (needs root) and collect, label and export each run
into it with almost no space left: each must exit 2 with one line on stderr and no traceback, and what was
committed before stays loadable (the dataset's episodes and labels, no bundle under its final name). Where the
mount is refused this part says so and is skipped (tests/test_crash_safety.py injects ENOSPC in-process).

Prints one table: command, kills, survived (kills after which every invariant held), failures and the first
failure (the full-disk row counts its runs into the full tmpfs as kills), then "kills survived" over the four
commands. Exits 1 if anything failed. On a loaded 2-core CPU a collect trial takes about 11 s, a label trial 4 s,
an export trial 7 s, a checkpoint trial 20 s: `--collect 30` takes about 15 minutes, the defaults about 28;
--quick (5 collect kills, 3 of each other) about 6.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from harmowam_core.data import format as fmt  # noqa: E402
from harmowam_core.data.reader import DatasetReader  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CAMERAS = (
    "cameras=[{name: front, role: front, height: 32, width: 32}, {name: top, role: top, height: 32, width: 32}, "
    "{name: wrist, role: wrist, height: 32, width: 32}]"
)
TINY = ["--set", CAMERAS, "--set", "max_episode_steps=6"]
EPISODES_PER_RUN = 3
WM = [
    "--set",
    CAMERAS,
    "--set",
    "model.overrides={world_model: {resolution: [32, 32]}}",
    "--set",
    "train_wm={batch_size: 2, warmup_steps: 1, preview_every: 1000000, held_out_episodes: 1, checkpoint_every: 1, "
    "steps: 1000000}",
]
WM_STEPS = 6  # steps of the measured (uninterrupted) train-wm run
STEP_DIR = re.compile(r"step_\d+")


@dataclass
class Run:
    rc: int | None  # None: killed
    seconds: float
    stderr: str
    stdout: str

    @property
    def killed(self) -> bool:
        return self.rc is None


@dataclass
class Tally:
    command: str
    kills: int = 0
    survived: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        self.failures.append(what)


def harmowam(args: list[str], kill_after: float | None = None, watch=None) -> Run:
    """Run `python -m harmowam_cli.main *args`; SIGKILL it `kill_after` seconds after the start (if still
    running). `watch()` is called about every 20 ms while it runs."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="200")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "harmowam_cli.main", *args], stdout=out, stderr=err, env=env, cwd=REPO
        )
        killed = False
        while proc.poll() is None:
            if kill_after is not None and time.perf_counter() - start >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                killed = True
                break
            if watch is not None:
                watch()
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        text_out, text_err = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return Run(None if killed else proc.returncode, seconds, text_err, text_out)


def must_succeed(run: Run, what: str) -> None:
    if run.rc != 0:
        raise SystemExit(f"{what} failed (exit {run.rc}): {run.stderr.strip()[-2000:]}")


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:200]


def trials(tally: Tally, count: int, duration: float, rng: random.Random, trial) -> None:
    """Kill `count` runs at uniform moments in [0, duration]; `trial(moment)` runs one and returns its Run (and
    records failures itself, returning False when an invariant broke)."""
    attempts = 0
    while tally.kills < count and attempts < 3 * count:
        attempts += 1
        moment = rng.uniform(0.0, duration)
        before = len(tally.failures)
        run, ok = trial(moment)
        if run.killed:
            tally.kills += 1
            tally.survived += int(ok and len(tally.failures) == before)
        print(
            f"  {tally.command} #{attempts}: {'killed' if run.killed else f'exit {run.rc}'} at {moment:.2f}/"
            f"{duration:.2f} s, {'ok' if ok and len(tally.failures) == before else 'FAILED'}",
            flush=True,
        )


# ------------------------------------------------------------------------------------------------ collect
def info_episodes(root: Path) -> int:
    try:
        return int(json.loads((root / fmt.INFO_PATH).read_text())["total_episodes"])
    except (OSError, ValueError, KeyError):
        return 0


def episode_digest(reader: DatasetReader, ep: int) -> tuple:
    sl = reader.episode_slice(ep)
    files = tuple(
        (p.stat().st_size, p.stat().st_mtime_ns)
        for p in [reader._file_rows[ep][0], *(reader.video_path(ep, c) for c in reader.cameras)]
    )
    return reader.action[sl].tobytes(), reader.state[sl].tobytes(), files


def check_dataset(root: Path, at_least: int, known: list[tuple]) -> tuple[str | None, list[tuple]]:
    """None and the digests of every episode, or a failure: the dataset does not load, holds fewer episodes than
    were committed, changed an earlier episode, holds a partial one or repeats a seed."""
    try:
        reader = DatasetReader(root)
    except Exception as err:  # noqa: BLE001 - any failure to load is what we count
        return f"the dataset does not load: {type(err).__name__}: {err}", known
    n = reader.num_episodes
    if n < at_least:
        return f"{n} episodes after the kill, but {at_least} were committed before it", known
    digests = []
    for ep in range(n):
        try:
            digest = episode_digest(reader, ep)
            if ep >= len(known):  # a new episode: decode every frame of every camera
                length = int(reader.lengths[ep])
                for camera in reader.cameras:
                    frames = reader.frames(ep, camera, range(length))
                    if len(frames) != length:
                        return f"episode {ep}: {len(frames)} frames of {camera}, length {length}", known
        except Exception as err:  # noqa: BLE001
            return f"episode {ep} does not read: {type(err).__name__}: {err}", known
        if ep < len(known) and digest != known[ep]:
            return f"episode {ep}, committed before, changed", known
        digests.append(digest)
    seeds = [r["seed"] for r in reader.episodes]
    if len(set(seeds)) != len(seeds):
        return f"a scene seed repeats: {seeds}", known
    return None, digests


def chaos_collect(work: Path, count: int, rng: random.Random, workers: int) -> tuple[Tally, Path]:
    tally = Tally("collect")
    root = work / "collect"
    cmd = ["collect", "--task", "stack_cans", "--episodes", str(EPISODES_PER_RUN), "--out", str(root),
           "--keep-failures", "--workers", str(workers), *TINY]  # fmt: skip
    first = harmowam(cmd)
    must_succeed(first, "the first collect")
    duration = first.seconds
    error, known = check_dataset(root, EPISODES_PER_RUN, [])
    if error:
        raise SystemExit(f"the uninterrupted collect: {error}")
    state = {"known": known}

    def trial(moment: float) -> tuple[Run, bool]:
        seen = [info_episodes(root)]
        run = harmowam(cmd, kill_after=moment, watch=lambda: seen.append(info_episodes(root)))
        if not run.killed and run.rc != 0:
            tally.fail(f"collect exited {run.rc} without a kill: {last_line(run.stderr)}")
            return run, False
        error, digests = check_dataset(root, max(max(seen), len(state["known"])), state["known"])
        if error:
            tally.fail(error)
            return run, False
        state["known"] = digests
        return run, True

    trials(tally, count, duration, rng, trial)
    before = len(state["known"])
    last = harmowam(cmd)
    error, digests = check_dataset(root, before, state["known"])
    if last.rc != 0 or error or len(digests) != before + EPISODES_PER_RUN:
        tally.fail(f"the last, uninterrupted collect: exit {last.rc}, {error or len(digests)} episodes")
    return tally, root


# ------------------------------------------------------------------------------------------------ label
def label_state(root: Path) -> tuple:
    """Everything `label` writes: every frame's label, the keyframes, the label stats, the recorded settings."""
    reader = DatasetReader(root)
    keyframes = tuple(tuple(r.get("keyframes") or ()) for r in reader.episodes)
    names = [f"stats/{fmt.LABEL_KEY}/{s}" for s in ("mean", "max", "count")]
    episode_stats = tuple(tuple(json.dumps(r.get(n)) for n in names) for r in reader.episodes)
    stats = json.dumps(reader.stats().get(fmt.LABEL_KEY), sort_keys=True)
    settings = json.dumps((reader.meta.get("labels") or {}), sort_keys=True)
    return reader.interaction.tobytes(), keyframes, episode_stats, stats, settings, reader.is_labelled


def chaos_label(work: Path, source: Path, count: int, rng: random.Random) -> Tally:
    tally = Tally("label")
    root = work / "label"
    shutil.copytree(source, root)
    z = DatasetReader(root).state[:, fmt.HEIGHT_INDEX]
    threshold = float(np.median(z))  # crossings in most episodes: keyframes to widen differently
    settings = {
        "A": ["--window", "0", "--set", f"gate.height_thresholds=[{threshold:.6f}]"],
        "B": ["--window", "3", "--set", f"gate.height_thresholds=[{threshold:.6f}]"],
    }
    states = {}
    for name in ("B", "A"):  # ends labelled with A
        run = harmowam(["label", str(root), *settings[name]])
        must_succeed(run, f"label {name}")
        states[name] = label_state(root)
    if states["A"] == states["B"]:
        raise SystemExit("settings A and B give the same labels: the label check would see nothing")
    duration = run.seconds
    current = {"name": "A"}

    def trial(moment: float) -> tuple[Run, bool]:
        target = "B" if current["name"] == "A" else "A"
        run = harmowam(["label", str(root), *settings[target]], kill_after=moment)
        if not run.killed and run.rc != 0:
            tally.fail(f"label exited {run.rc} without a kill: {last_line(run.stderr)}")
            return run, False
        try:
            now = label_state(root)
        except Exception as err:  # noqa: BLE001
            tally.fail(f"the dataset does not load after the kill: {type(err).__name__}: {err}")
            return run, False
        match = [name for name, s in states.items() if s == now]
        if not match:
            parts = ("labels", "keyframes", "episode label stats", "stats.json", "harmowam.json labels", "feature")
            both = list(zip(parts, states["A"], states["B"], now, strict=True))
            mixed = [p for p, a, b, c in both if c not in (a, b)]
            sides = [p + ":" + ("A" if c == a else "B") for p, a, b, c in both if a != b and c in (a, b)]
            tally.fail(f"labels neither all A nor all B (new values: {mixed or 'none'}; {', '.join(sides)})")
            return run, False
        current["name"] = match[0]
        return run, True

    trials(tally, count, duration, rng, trial)
    return tally


# ------------------------------------------------------------------------------------------------ export
def bundle_failures(bundles: Path) -> str | None:
    from harmowam_core.policy.bundle import BUNDLE_FILE, verify_bundle

    if not bundles.is_dir():
        return None
    for path in sorted(bundles.iterdir()):
        temporary = path.name.startswith(".") or path.name.endswith(".partial")
        if not (path / BUNDLE_FILE).exists():
            if not temporary:
                return f"{path.name}: a directory under its final name without {BUNDLE_FILE}"
            continue
        try:
            verify_bundle(path)
        except Exception as err:  # noqa: BLE001
            return f"{path.name}: {type(err).__name__}: {err}"
    return None


def chaos_export(work: Path, count: int, rng: random.Random) -> Tally:
    from harmowam_cli._common import quiet_libraries
    from harmowam_core.config import load_recipe
    from harmowam_core.policy.bundle import untrained_run

    quiet_libraries()
    tally = Tally("export")
    run_dir = untrained_run(work / "run", load_recipe("stack_cans"), resolution=32)
    bundles = work / "bundles"
    first = harmowam(["export", str(run_dir), "--bundles", str(bundles), "--name", "first"])
    must_succeed(first, "the first export")
    duration = first.seconds
    number = iter(range(10**6))

    def trial(moment: float) -> tuple[Run, bool]:
        name = f"b{next(number)}"
        run = harmowam(["export", str(run_dir), "--bundles", str(bundles), "--name", name], kill_after=moment)
        if not run.killed and run.rc != 0:
            tally.fail(f"export exited {run.rc} without a kill: {last_line(run.stderr)}")
            return run, False
        error = bundle_failures(bundles)
        if error is None and not run.killed and not (bundles / name).is_dir():
            error = f"{name}: export exited 0 but the bundle is absent"
        if error:
            tally.fail(error)
            return run, False
        return run, True

    trials(tally, count, duration, rng, trial)
    return tally


# ------------------------------------------------------------------------------------------------ checkpoint
def checkpoint_failures(out: Path) -> str | None:
    """Every checkpoints/step_N directory whole: step.json naming step N, and every file loading."""
    import torch
    from safetensors.torch import load_file

    for path in sorted((out / "checkpoints").glob("step_*")):
        if not STEP_DIR.fullmatch(path.name):
            return f"{path.name}: a checkpoint directory with another name"
        try:
            step = json.loads((path / "step.json").read_text())["step"]
            if f"step_{step}" != path.name:
                return f"{path.name}: step.json says step {step}"
            files = sorted(p for p in path.iterdir() if p.is_file() and p.name != "step.json")
            if not any(p.suffix == ".safetensors" for p in files):
                return f"{path.name}: no model weights"
            for file in files:
                if file.suffix == ".safetensors":
                    load_file(file)
                elif file.suffix in (".bin", ".pkl", ".pt"):
                    torch.load(file, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001
            return f"{path.name}: not whole ({type(err).__name__}: {str(err)[:120]})"
    return None


def newest_step(out: Path) -> int:
    steps = [int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*") if STEP_DIR.fullmatch(p.name)]
    return max(steps, default=0)


def chaos_checkpoint(work: Path, data: Path, count: int, rng: random.Random) -> Tally:
    tally = Tally("checkpoint")
    first = harmowam(["train-wm", "stack_cans", "--data", str(data), "--out", str(work / "wm-first"), "--max-steps",
                      str(WM_STEPS), *WM])  # fmt: skip
    must_succeed(first, "the first train-wm")
    duration = first.seconds
    out = work / "wm"
    cmd = ["train-wm", "stack_cans", "--data", str(data), "--out", str(out), "--resume", *WM]

    def trial(moment: float) -> tuple[Run, bool]:
        run = harmowam(cmd, kill_after=moment)
        if not run.killed:
            tally.fail(f"train-wm --resume exited {run.rc} without a kill: {last_line(run.stderr)}")
            return run, False
        error = checkpoint_failures(out)
        if error:
            tally.fail(error)
            return run, False
        return run, True

    trials(tally, count, duration, rng, trial)
    last = harmowam([*cmd, "--max-steps", str(newest_step(out) + 2)])
    if last.rc != 0:
        tally.fail(f"the last, uninterrupted train-wm --resume exited {last.rc}: {last_line(last.stderr)}")
    return tally


# ------------------------------------------------------------------------------------------------ full disk
def one_line_exit_2(run: Run) -> str | None:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    if run.rc != 2 or len(lines) != 1 or "Traceback" in run.stderr:
        return f"exit {run.rc}, stderr {len(lines)} line(s): {last_line(run.stderr)}"
    return None


def fill(mount: Path, leave: int) -> None:
    """Fill the tmpfs at `mount` until only about `leave` bytes are free."""
    stat = os.statvfs(mount)
    free = stat.f_bavail * stat.f_frsize
    with open(mount / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def chaos_full_disk(work: Path, dataset: Path, run_dir: Path | None) -> tuple[Tally, str]:
    tally = Tally("full disk")
    mount = work / "tmpfs"
    mount.mkdir()
    size = sum(p.stat().st_size for p in dataset.rglob("*") if p.is_file()) + (64 << 20)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        return tally, f"full disk: mount refused ({last_line(mounted.stderr.decode())}); skipped"
    try:
        root = mount / "ds"
        shutil.copytree(dataset, root)
        for name, leave, args in (
            ("collect", 200_000, ["collect", "--task", "stack_cans", "--episodes", "1000", "--out", str(root),
                                  "--keep-failures", "--workers", "1", *TINY]),
            ("label", 4096, ["label", str(root), "--window", "2"]),
        ):  # fmt: skip
            (mount / "filler").unlink(missing_ok=True)
            error, known = check_dataset(root, 0, [])
            before = label_state(root) if not error else None
            fill(mount, leave)
            run = harmowam(args)
            tally.kills += 1  # here: full-disk runs
            problem = one_line_exit_2(run)
            after, digests = check_dataset(root, len(known), known)
            if name == "label" and not problem and not after and label_state(root) != before:
                after = "the labels changed although label failed"
            if problem or error or after:
                tally.fail(f"{name}: {problem or error or after}")
            else:
                tally.survived += 1
            print(f"  full disk, {name}: {problem or after or 'one line, exit 2, dataset intact'}", flush=True)
            print(f"    {last_line(run.stderr)}", flush=True)
        if run_dir is not None:
            (mount / "filler").unlink(missing_ok=True)
            fill(mount, 300_000)
            bundles = mount / "bundles"
            run = harmowam(["export", str(run_dir), "--bundles", str(bundles), "--name", "full"])
            tally.kills += 1
            problem = one_line_exit_2(run) or bundle_failures(bundles)
            if not problem and (bundles / "full").exists():
                problem = "a bundle under its final name although export failed"
            if problem:
                tally.fail(f"export: {problem}")
            else:
                tally.survived += 1
            print(f"  full disk, export: {problem or 'one line, exit 2, no bundle'}", flush=True)
            print(f"    {last_line(run.stderr)}", flush=True)
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    return tally, "full disk: tmpfs mounted"


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collect", type=int, default=100)
    parser.add_argument("--label", type=int, default=20)
    parser.add_argument("--export", type=int, default=20)
    parser.add_argument("--checkpoint", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="collect --workers")
    parser.add_argument("--quick", action="store_true", help="5 collect kills and 3 of each other")
    parser.add_argument("--no-disk-full", action="store_true")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    if args.quick:
        args.collect, args.label, args.export, args.checkpoint = 5, 3, 3, 3
    rng = random.Random(args.seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="harmowam-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tallies: list[Tally] = []
    disk_note = ""
    try:
        print(f"work folder {work}", flush=True)
        tally, dataset = chaos_collect(work, args.collect, rng, args.workers)
        tallies.append(tally)
        if args.label:
            tallies.append(chaos_label(work, dataset, args.label, rng))
        if args.export:
            tallies.append(chaos_export(work, args.export, rng))
        if args.checkpoint:
            data = work / "wm-data"  # train-wm scores 13-frame clips: longer episodes
            must_succeed(harmowam(["collect", "--task", "stack_cans", "--episodes", "3", "--out", str(data),
                                   "--keep-failures", "--workers", "1", "--set", CAMERAS, "--set",
                                   "max_episode_steps=14"]), "collect for train-wm")  # fmt: skip
            tallies.append(chaos_checkpoint(work, data, args.checkpoint, rng))
        if not args.no_disk_full:
            tally, disk_note = chaos_full_disk(work, work / "label" if args.label else dataset,
                                               work / "run" if args.export else None)  # fmt: skip
            tallies.append(tally)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    minutes = (time.perf_counter() - start) / 60
    print(f"\nchaos, seed {args.seed}, {minutes:.1f} min; {disk_note}")
    print(f"{'command':<11} {'kills':>6} {'survived':>9} {'failures':>9}  first failure")
    for t in tallies:
        first = t.failures[0] if t.failures else ""
        print(f"{t.command:<11} {t.kills:>6} {t.survived:>9} {len(t.failures):>9}  {first}")
    total = sum(t.kills for t in tallies if t.command != "full disk")
    survived = sum(t.survived for t in tallies if t.command != "full disk")
    print(f"kills survived: {survived}/{total}")
    sys.exit(1 if any(t.failures for t in tallies) else 0)


if __name__ == "__main__":
    main()
