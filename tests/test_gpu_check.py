"""benchmarks/gpu_check.py, the GPU check of the paper preset: its whole path on the CPU (tiny preset), the paper
preset built on the meta device, and the refusal without a CUDA device (the script and its driver)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ROWS = [
    "build (random weights)",
    "parameters: world model: transformer",
    "parameters:   frame CNN",  # the tiny preset trains its encoders; the paper preset prints DINOv2 here
    "stage 1 step: world model",
    "stage 2 step: experts",
    "plan, 3 world-model steps",
    "plan, 5 world-model steps",
    "plan, 10 world-model steps",
    "plan, 50 world-model steps",
    "closed loop, sync",
    "closed loop, async",
    "total wall time",
]
# Run as on the GPU machine: no PyAV, and nothing may import the simulator.
WITHOUT_OPTIONAL = (
    "import runpy, sys\n"
    "for name in ('av', 'robosuite', 'mujoco'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def run(args: list[str], timeout: float = 240, cmd: list[str] | None = None) -> subprocess.CompletedProcess:
    # one thread: on a shared 2-core machine torch's thread pool waits on busy cores far longer than it computes
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    env["OMP_NUM_THREADS"] = "1"
    cmd = cmd or [sys.executable, "-c", WITHOUT_OPTIONAL, str(SCRIPT)]
    return subprocess.run([*cmd, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_smoke_run_on_the_cpu_prints_every_row(tmp_path):
    out = tmp_path / "gpu_check.json"
    args = ["--preset", "tiny", "--device", "cpu", "--allow-cpu", "--repeats", "1", "--actions", "24"]
    result = run([*args, "--train-steps", "1", "--json", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    for row in ROWS:
        assert row in result.stdout, (row, result.stdout)
    assert "FAILED" not in result.stdout and "skipped" not in result.stdout
    data = json.loads(out.read_text())
    assert data["failed"] == [] and data["preset"] == "tiny"
    assert set(data["plan_seconds"]) == {"3", "5", "10", "50"}
    assert all(v > 0 for v in data["plan_seconds"].values())
    assert data["actions_per_second"]["sync"] > 0 and data["actions_per_second"]["async"] > 0
    assert data["stage1"]["loss"] == data["stage1"]["loss"]  # finite, not NaN
    assert data["stage2"]["peak_gib"] is None  # no GPU memory to report on the CPU


def test_checks_past_the_time_budget_are_skipped_not_failed():
    args = ["--preset", "tiny", "--device", "cpu", "--allow-cpu", "--train-steps", "1", "--wm-steps", "3"]
    result = run([*args, "--budget-s", "0", "--set", "world_model.num_layers=1"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stage 1 step: world model" in result.stdout and "FAILED" not in result.stdout
    skipped = [line for line in result.stdout.splitlines() if "skipped" in line]
    assert len(skipped) == 3, result.stdout  # the plan and both closed loops


def test_a_bad_override_is_one_line():
    result = run(["--preset", "tiny", "--allow-cpu", "--set", "world_model.bogus=1"], timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "world_model.bogus" in lines[0], result.stderr


def test_paper_preset_builds_on_the_meta_device(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = run(["--device", "meta", "--json", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stage 1 step" not in result.stdout  # the meta device builds only
    n = json.loads(out.read_text())["parameters"]
    assert 4.9e9 < n["world model: transformer"] < 5.1e9  # Wan2.2-TI2V-5B
    assert 0.95e9 < n["predictive expert (DiT)"] < 1.1e9
    assert 80e6 < n["SigLIP"] < 100e6 and 100e6 < n["T5"] < 120e6 and 80e6 < n["DINOv2"] < 95e6


def test_refuses_without_a_cuda_device_in_one_line():
    result = run(["--preset", "tiny"], timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device"), result.stderr
    assert result.stdout == ""


def test_the_driver_passes_the_refusal_on():
    result = run([], timeout=120, cmd=["bash", str(ROOT / "benchmarks" / "gpu_check.sh")])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device"), result.stderr
