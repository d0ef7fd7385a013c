"""A training run killed and resumed many times ends at the weights of the run that never stopped (issue 22).

    python benchmarks/resume_determinism.py [--stage wm|experts|both] [--kills 20] [--steps 40] [--seed 0]

On a tiny synthetic dataset (the tests' writer, tests/conftest.py) each stage trains twice, with the tiny preset
at 32 px, an EMA, a cosine schedule and a checkpoint every step, each `harmowam train-wm` / `train-experts` in a
subprocess of its own with torch's deterministic mode on:

- uninterrupted: one process, `--steps` steps;
- killed: `--kills` distinct random steps are drawn (from `--seed`); for each, a process is started (with
  `--resume` after the first), and once its checkpoint of that step (or a later one) is written, it is sent
  SIGKILL after a random further delay of up to a step's time (so a kill may land mid-step, mid-checkpoint or
  mid-log); then a last `--resume` runs to the end.

It prints, per stage: the kills, the steps each resume started at, the largest absolute difference of any weight
from the uninterrupted run (the trained model, from the last checkpoint, and the EMA, from model/), and whether
all are bitwise equal. The experts train on the uninterrupted world model. The world-model stage took 7 minutes
on the project's 2 CPU cores under a load of about 6 (most of it the 22 process starts).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from conftest import read_saved_weights, write_dataset  # noqa: E402

from harmowam_core.training.loop import checkpoints  # noqa: E402

MODEL = "model.overrides={world_model: {resolution: [32, 32], denoising_steps: 1}, predictive_expert: {image_size: 32}, reactive_expert: {image_size: 32}}"  # noqa: E501


def stage_args(stage: str, data: Path, wm: Path | None, steps: int) -> list[str]:
    section = "train_wm" if stage == "wm" else "train_experts"
    spec = (
        f"{section}={{steps: {steps}, batch_size: 2, warmup_steps: 2, lr_schedule: cosine, ema_decay: 0.9, "
        "checkpoint_every: 1, held_out_episodes: 1"
        + (", preview_every: 0}" if stage == "wm" else ", window_stride: 2}")
    )
    args = ["train-wm" if stage == "wm" else "train-experts", "stack_cans", "--data", str(data)]
    if wm is not None:
        args += ["--wm", str(wm)]
    return [*args, "--set", MODEL, "--set", spec]


def command(args: list[str]) -> list[str]:
    """The CLI in a fresh Python, in torch's deterministic mode."""
    start = "import sys, torch; torch.use_deterministic_algorithms(True); from harmowam_cli.main import app; app()"
    return [sys.executable, "-c", start, *args]


def run_to_end(args: list[str], log: Path) -> None:
    with log.open("ab") as out:
        subprocess.run(command(args), stdout=out, stderr=subprocess.STDOUT, check=True, cwd=ROOT)


def last_step(out: Path) -> int:
    found = checkpoints(out)
    return int(found[-1].name.split("_")[1]) if found else 0


def killed_run(
    args: list[str], out: Path, steps: int, kills: int, rng: random.Random, log: Path
) -> tuple[int, list[int]]:
    """`kills` runs, each sent SIGKILL at a random moment after its checkpoint at one of `kills` distinct random
    steps, then a resume to the end; returns how many were killed before they ended and each run's start step."""
    targets = sorted(rng.sample(range(1, steps), kills))
    starts, step_seconds, killed = [], 2.0, 0
    for target in targets:
        start = last_step(out)
        starts.append(start)
        target = max(target, start + 1)  # a kill's delay may have let the run past the next target
        with log.open("ab") as sink:
            resume = ["--resume"] if start else []
            proc = subprocess.Popen(command([*args, *resume]), stdout=sink, stderr=sink, cwd=ROOT)
            seen, since = start, None
            while proc.poll() is None:
                now = last_step(out)
                if now != seen:
                    step_seconds = time.monotonic() - since if since is not None else step_seconds
                    seen, since = now, time.monotonic()
                if now >= target:
                    time.sleep(rng.uniform(0.0, step_seconds))
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGKILL)
                        killed += 1
                    break
                time.sleep(0.05)
            proc.wait()
    starts.append(last_step(out))
    run_to_end([*args, "--resume"], log)
    return killed, starts


def compare(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> tuple[float, float, bool]:
    assert expected.keys() == got.keys()
    diff = {k: (expected[k].double() - got[k].double()).abs().max().item() for k in expected}
    model = max(v for k, v in diff.items() if k.startswith("checkpoint."))
    ema = max(v for k, v in diff.items() if k.startswith("model."))
    return model, ema, all(torch.equal(expected[k], got[k]) for k in expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["wm", "experts", "both"], default="wm")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()
    rng = random.Random(opts.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, _ = write_dataset(
            tmp / "ds", lengths=(18, 16, 15), cameras={"front": (32, 32), "top": (16, 16), "wrist": (16, 16)}
        )
        from harmowam_core.data.labels import LabelSettings, label_dataset

        label_dataset(data, LabelSettings(window=2))
        log = tmp / "train.log"
        stages = ["wm", "experts"] if opts.stage == "both" else [opts.stage]
        wm_model = None
        if "experts" in stages and "wm" not in stages:  # the experts need a world model: a short one
            run_to_end([*stage_args("wm", data, None, 2), "--out", str(tmp / "wm")], log)
            wm_model = tmp / "wm" / "model"
        for stage in stages:
            began = time.monotonic()
            args = stage_args(stage, data, wm_model, opts.steps)
            try:
                run_to_end([*args, "--out", str(tmp / stage / "whole")], log)
                killed, starts = killed_run([*args, "--out", str(tmp / stage / "killed")], tmp / stage / "killed",
                                    opts.steps, opts.kills, rng, log)  # fmt: skip
            except subprocess.CalledProcessError:
                sys.exit(f"a training run failed; its output:\n{log.read_text()[-4000:]}")
            model, ema, equal = compare(
                read_saved_weights(tmp / stage / "whole"), read_saved_weights(tmp / stage / "killed")
            )
            print(
                f"{stage}: {opts.steps} steps, killed (SIGKILL) {killed} times and resumed ({len(starts) - 1} "
                f"resumes); the runs started at steps {starts}"
            )
            print(f"  max |weight difference| vs uninterrupted: model {model:.3g}, EMA {ema:.3g}")
            print(f"  equal: {'yes' if equal else 'no'}   ({time.monotonic() - began:.0f} s)")
            if stage == "wm":
                wm_model = tmp / "wm" / "whole" / "model"


if __name__ == "__main__":
    main()
