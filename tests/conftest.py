"""Shared fixtures: a factory for small synthetic datasets written through the real writer."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from harmowam_core.data.format import DatasetSpec
from harmowam_core.data.writer import DatasetWriter


def smooth_frame(t: int, h: int, w: int, phase: float = 0.0) -> np.ndarray:
    """A smooth, moving RGB image: what a codec reproduces closely (noise would not be)."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = 128 + 90 * np.sin(xx / 7.0 + t / 4.0 + phase)
    g = 128 + 90 * np.cos(yy / 6.0 - t / 5.0)
    b = 128 + 60 * np.sin((xx + yy) / 11.0 + t / 3.0)
    return np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)


def synthetic_episode(length: int, num_arms: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    actions = rng.normal(size=(length, 7 * num_arms)).astype(np.float32)
    states = rng.normal(size=(length, 7 * num_arms)).astype(np.float32)
    for arm in range(num_arms):
        actions[:, 7 * arm + 6] = (np.arange(length) // 7 + arm) % 2  # gripper toggles every 7 frames
    return actions, states


def write_dataset(root, lengths=(20, 25), num_arms=1, cameras=None, task="stack the cans", stage_success=None):
    """A synthetic dataset at `root` through the real writer -> (root, episodes); episodes: list of (actions,
    states, {camera: frames}) exactly as written (also `benchmarks/resume_determinism.py`'s data)."""
    cameras = cameras or {"front": (32, 48), "wrist": (16, 16)}
    spec = DatasetSpec(fps=10, num_arms=num_arms, cameras=cameras)
    written = []
    with DatasetWriter(root, spec, task_name="stack_cans", stage_names=["beside", "on_top"]) as writer:
        for e, n in enumerate(lengths):
            actions, states = synthetic_episode(n, num_arms, seed=writer.num_episodes)
            frames = {c: [smooth_frame(t, h, w, phase=e) for t in range(n)] for c, (h, w) in cameras.items()}
            with writer.episode(task) as ep:
                for t in range(n):
                    ep.add_frame(actions[t], states[t], {c: frames[c][t] for c in cameras})
                ep.save(stage_success[e] if stage_success else [True, e % 2 == 0])
            written.append((actions, states, frames))
    return root, written


@pytest.fixture
def make_dataset(tmp_path):
    """make_dataset(lengths=[20, 25], num_arms=1, cameras={"front": (32, 48)}) -> (root, episodes)

    episodes: list of (actions, states, {camera: frames}) exactly as written.
    """

    def make(lengths=(20, 25), num_arms=1, cameras=None, root=None, task="stack the cans", stage_success=None):
        return write_dataset(root or tmp_path / "ds", lengths, num_arms, cameras, task, stage_success)

    return make


def read_saved_weights(out) -> dict[str, torch.Tensor]:
    """A training run's weights as saved: "checkpoint.<key>" from its last checkpoint (the trained model) and
    "model.<folder>.<key>" from model/ (the EMA where it is on)."""
    from safetensors.torch import load_file

    from harmowam_core.training.loop import checkpoints

    raw = load_file(checkpoints(out)[-1] / "model.safetensors")
    files = sorted((out / "model").rglob("*.safetensors"))
    final = {f"model.{f.parent.name}.{k}": v for f in files for k, v in load_file(f).items()}
    return {**{f"checkpoint.{k}": v for k, v in raw.items()}, **final}


@pytest.fixture
def deterministic_kernels():
    """torch's deterministic mode (what accelerate's `set_seed(deterministic=True)` turns on), restored after."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def stopped_and_resumed(invoke, args, out, between=lambda: None):
    """Run the training command `args` (a list, without --out) whole into out/whole, then (after `between()`) with
    --max-steps 2 and --resume into out/parts; returns both runs' `read_saved_weights`, (whole, parts)."""
    whole = invoke([*args, "--out", str(out / "whole")])
    assert whole.exit_code == 0, whole.output
    between()
    first = invoke([*args, "--out", str(out / "parts"), "--max-steps", "2"])
    assert first.exit_code == 0, first.output
    resumed = invoke([*args, "--out", str(out / "parts"), "--resume"])
    assert resumed.exit_code == 0 and "resumed at step 2" in resumed.output, resumed.output
    expected, got = read_saved_weights(out / "whole"), read_saved_weights(out / "parts")
    assert expected.keys() == got.keys()
    return expected, got
