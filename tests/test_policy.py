"""Policy bundles and the closed-loop policy: a tiny random bundle exported from a run directory reloads on its
own and plans chunks with every router; the newest bundle is found; mistakes are one clear error."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from harmowam_core.action_space import deltas_from_targets
from harmowam_core.config import load_recipe
from harmowam_core.envs.base import Observation
from harmowam_core.errors import HarmoWAMError
from harmowam_core.policy.bundle import export_bundle, newest_bundle, read_bundle, untrained_run
from harmowam_core.policy.policy import HarmoWAMPolicy, release_openmp_team
from harmowam_core.policy.routers import ROUTERS

CAMERAS = ["front", "top", "wrist"]


@pytest.fixture
def run_dir(tmp_path):
    """runs/stack_cans with a saved tiny world model and tiny experts, as the two training stages leave it."""
    root = untrained_run(tmp_path / "runs" / "stack_cans", load_recipe("stack_cans"), resolution=32)
    report = json.loads((root / "experts" / "report.json").read_text())
    (root / "experts" / "report.json").write_text(json.dumps({**report, "gate_accuracy": 0.5}))
    return root


def observation(seed=0) -> Observation:
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for c in CAMERAS}
    return Observation(images=images, state=rng.normal(size=7).astype(np.float32), instruction="stack the cans")


def test_an_exported_bundle_stands_alone_and_plans_with_every_router(run_dir, tmp_path):
    bundle = export_bundle(run_dir, tmp_path / "bundles", name="b1")
    meta = read_bundle(bundle)
    assert meta["task"] == "stack_cans" and meta["versions"]["torch"] == torch.__version__
    assert meta["reports"]["experts"]["gate_accuracy"] == 0.5
    shutil.rmtree(run_dir)  # nothing outside the bundle is needed any more
    plans = {}
    for router in ROUTERS:
        policy = HarmoWAMPolicy.from_bundle(bundle, router=router)
        plans[router] = policy.plan(observation().images, observation().state, "stack the cans")
        assert plans[router].chunk.shape == (12, 7) and np.isfinite(plans[router].chunk).all()
        assert plans[router].imagined.shape == (13, 32, 32, 3)
    gate = plans["gate"]
    assert gate.used == ("predictive" if gate.p_interaction >= 0.5 else "reactive")
    np.testing.assert_allclose(plans["reactive"].chunk, plans["reactive"].reactive)
    np.testing.assert_allclose(plans["average"].chunk, (plans["average"].predictive + plans["average"].reactive) / 2)


def test_act_replans_after_the_executed_steps(run_dir, tmp_path):
    policy = HarmoWAMPolicy.from_bundle(export_bundle(run_dir, tmp_path / "bundles"), execute_steps=4)
    plans = []
    real_plan = policy.plan

    previous, previous_state = [], []

    def recording(images, state, instruction, before, before_state):
        previous.append(before)
        previous_state.append(before_state)
        plans.append(real_plan(images, state, instruction, before, before_state))
        return plans[-1]

    policy.plan = recording
    actions = [policy.act(observation(t)) for t in range(9)]
    assert len(plans) == 3  # at steps 0, 4 and 8
    # each plan sees the world-model camera one step before its observation (none at the episode's start)
    assert previous[0] is None and previous_state[0] is None
    for plan, step in ((1, 3), (2, 7)):
        for camera in CAMERAS:
            np.testing.assert_array_equal(previous[plan][camera], observation(step).images[camera])
        np.testing.assert_array_equal(previous_state[plan], observation(step).state)
    np.testing.assert_array_equal(np.stack(actions[:4]), plans[0].chunk[:4])
    np.testing.assert_array_equal(np.stack(actions[4:8]), plans[1].chunk[:4])
    assert policy.last_plan is plans[2]
    policy.reset()  # a new episode forgets them; `observe` records a step another controller took
    policy.observe(observation(20))
    policy.act(observation(21))
    np.testing.assert_array_equal(previous_state[-1], observation(20).state)
    np.testing.assert_array_equal(previous[-1]["front"], observation(20).images["front"])


def test_newest_bundle_and_clear_errors(run_dir, tmp_path):
    bundles = tmp_path / "bundles"
    with pytest.raises(HarmoWAMError, match="harmowam export"):
        newest_bundle(bundles)
    first = export_bundle(run_dir, bundles, name="a")
    second = export_bundle(run_dir, bundles, name="b")
    os.utime(first / "bundle.json", (1e9, 1e9))
    assert newest_bundle(bundles) == second
    with pytest.raises(HarmoWAMError, match="already exists"):
        export_bundle(run_dir, bundles, name="a")
    with pytest.raises(HarmoWAMError, match="train-experts"):
        export_bundle(tmp_path / "nothing", bundles)
    with pytest.raises(HarmoWAMError, match="not a HarmoWAM bundle"):
        read_bundle(tmp_path)
    with pytest.raises(HarmoWAMError, match="router"):
        HarmoWAMPolicy.from_bundle(second, router="vote")


def _one_line_error(result, *texts: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and all(t in lines[0] for t in texts), result.output


def test_a_truncated_or_altered_bundle_file_is_one_line_in_eval_and_deploy(run_dir, tmp_path):
    """export records every file's SHA-256 in bundle.json; a half-truncated experts.safetensors was an 80-line
    traceback and exit 1 in eval and deploy, and is now one line naming the file, exit code 2."""
    from typer.testing import CliRunner

    from harmowam_cli.main import app
    from harmowam_core.policy.bundle import sha256_file, verify_bundle

    bundle = export_bundle(run_dir, tmp_path / "bundles", name="b")
    files = read_bundle(bundle)["files"]
    on_disk = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert sorted(files) == [f for f in on_disk if f != "bundle.json"] and "experts/experts.safetensors" in files
    assert all(files[f] == sha256_file(bundle / f) for f in files)
    verify_bundle(bundle)

    weights = bundle / "experts" / "experts.safetensors"
    intact = weights.read_bytes()
    weights.write_bytes(intact[: len(intact) // 2])
    runner = CliRunner()
    for command in (["eval", str(bundle), "--episodes", "1"], ["deploy", str(bundle), "--episodes", "1"]):
        _one_line_error(runner.invoke(app, command), "experts/experts.safetensors", "SHA-256 differs")
    with pytest.raises(HarmoWAMError, match="truncated or altered"):
        HarmoWAMPolicy.from_bundle(bundle)

    altered = bytearray(intact)
    altered[-1] ^= 1  # same size, one bit
    weights.write_bytes(bytes(altered))
    with pytest.raises(HarmoWAMError, match="experts.safetensors: its SHA-256 differs"):
        verify_bundle(bundle)
    weights.write_bytes(intact)
    verify_bundle(bundle)
    (bundle / "experts" / "pytorch_model.bin").write_bytes(b"not exported")
    with pytest.raises(HarmoWAMError, match=r"pytorch_model.bin: not part of the exported bundle"):
        HarmoWAMPolicy.from_bundle(bundle)
    (bundle / "experts" / "pytorch_model.bin").unlink()
    (bundle / "recipe.yaml").unlink()
    with pytest.raises(HarmoWAMError, match=r"recipe.yaml: missing from the bundle"):
        verify_bundle(bundle)


def test_a_bundle_exported_before_the_hashes_still_loads(run_dir, tmp_path):
    """No `files` in bundle.json: it loads without hashes and plans; truncated weights are one line, found from the
    safetensors header before any model loads."""
    bundle = export_bundle(run_dir, tmp_path / "bundles", name="old")
    meta = read_bundle(bundle)
    del meta["files"]
    (bundle / "bundle.json").write_text(json.dumps(meta))
    plan = HarmoWAMPolicy.from_bundle(bundle).plan(observation().images, observation().state, "stack the cans")
    assert plan.chunk.shape == (12, 7) and np.isfinite(plan.chunk).all()
    weights = bundle / "experts" / "experts.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(HarmoWAMError, match=r"experts.safetensors: truncated or not a safetensors file") as err:
        HarmoWAMPolicy.from_bundle(bundle)  # found by verify_bundle, before any model loads
    assert "\n" not in str(err.value)
    (bundle / "bundle.json").write_text("{not json")
    with pytest.raises(HarmoWAMError, match="bundle.json: not readable JSON"):
        read_bundle(bundle)


def _foreign_threads() -> int:
    """Threads of this process that Python did not start: the OpenMP teams torch keeps are among them."""
    python = {t.native_id for t in threading.enumerate()}
    return len({int(tid) for tid in os.listdir("/proc/self/task")} - python)


needs_gomp = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir() or not release_openmp_team(), reason="needs Linux and torch on GNU OpenMP"
)


@pytest.fixture
def two_torch_threads():
    """torch on two threads, so that a parallel op leaves a team of two (the thread and one more) behind."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _teams_after_a_parallel_op_on_this_thread() -> int:
    """The count of foreign threads with no OpenMP team kept for this thread; a parallel op then leaves one."""
    release_openmp_team()
    alone = _foreign_threads()
    torch.ones(1 << 22).exp_()
    assert _foreign_threads() == alone + 1
    return alone


@needs_gomp
def test_async_plans_find_the_callers_team_handed_back_and_its_thread_count(run_dir, tmp_path, two_torch_threads):
    """libgomp stops spin-waiting once it manages more threads than CPUs, which halved the planning thread's speed
    beside the caller's idle team: the planning thread must find that team handed back and take the caller's torch
    thread count, even one changed after the planning thread began."""
    seen = []

    class Probing(HarmoWAMPolicy):
        def plan(self, *args):
            seen.append((_foreign_threads(), torch.get_num_threads()))
            return super().plan(*args)

    with Probing.from_bundle(export_bundle(run_dir, tmp_path / "bundles"), async_inference=True, lead=4) as policy:
        policy.plan(observation().images, observation().state, "stack the cans")  # first-call set-up, here
        alone = _teams_after_a_parallel_op_on_this_thread()
        seen.clear()
        policy.act(observation())  # the episode's first plan, on the planning thread
        assert seen == [(alone, 2)]
        torch.set_num_threads(1)
        for t in range(1, 5):  # the fifth action starts the next plan, 4 actions ahead
            policy.act(observation(t))
        policy._pending.result()
        assert seen[1][1] == 1


@needs_gomp
def test_only_the_thread_that_planned_last_keeps_an_openmp_team(run_dir, tmp_path, two_torch_threads):
    """A planning thread keeps its team from one plan to the next (a new one each plan costs throughput), but not
    once another policy plans: the evaluation runs one async policy per router in turn, and sync ones plan on the
    caller's thread."""
    bundle = export_bundle(run_dir, tmp_path / "bundles")
    first = HarmoWAMPolicy.from_bundle(bundle, async_inference=True)
    second = HarmoWAMPolicy.from_bundle(bundle, async_inference=True)
    sync = HarmoWAMPolicy.from_bundle(bundle)
    with first, second, sync:
        sync.plan(observation().images, observation().state, "stack the cans")  # first-call set-up, here
        alone = _teams_after_a_parallel_op_on_this_thread()

        def idle() -> int:  # foreign threads once both planning threads are idle
            first._pool.submit(int).result()
            second._pool.submit(int).result()
            return _foreign_threads()

        first.act(observation())
        assert idle() == alone + 1  # the caller handed its team back; the planning thread keeps one
        second.act(observation())
        assert idle() == alone + 1  # the first planning thread handed its team back
        sync.act(observation())
        assert idle() == alone + 1  # and the second too: only the caller's is left


@pytest.mark.parametrize("targets", ["absolute", "pose"])
def test_executed_targets_become_deltas_against_the_state_observed_at_each_step(run_dir, tmp_path, targets):
    """Experts predicting targets (`absolute` positions, or `pose`: the orientation too): every executed step of
    a plan is the delta from the state observed at that step to the plan's target for it (action_space)."""
    policy = HarmoWAMPolicy.from_bundle(export_bundle(run_dir, tmp_path / "bundles"), execute_steps=4)
    policy.experts.config.action_targets = targets
    actions = [policy.act(observation(t)) for t in range(3)]
    chunk = policy.last_plan.chunk
    for t, action in enumerate(actions):
        expected = deltas_from_targets(chunk[t], observation(t).state, rotation=targets == "pose")
        np.testing.assert_allclose(action, expected, atol=1e-6)


def test_the_policy_crops_the_cameras_as_the_experts_were_trained(tmp_path, monkeypatch):
    """`predictive_expert.crops`, keyed by camera name: in closed loop (observations keyed by role) each camera is
    cut and resized as in training (`resize_frames`), a camera without a crop read whole."""
    from harmowam_core.data.windows import resize_frames

    renamed = "cameras=[{name: front, role: front, height: 96, width: 96}, {name: overhead, role: top, height: 96, "
    renamed += "width: 96}, {name: hand, role: wrist, height: 96, width: 96}]"
    crops = "model.overrides.predictive_expert.crops={hand: [0.5, 0.25, 0.5, 0.5]}"
    run = untrained_run(tmp_path / "runs" / "stack_cans", load_recipe("stack_cans", [renamed, crops]), resolution=32)
    policy = HarmoWAMPolicy.from_bundle(export_bundle(run, tmp_path / "bundles"))
    seen, real = {}, policy.experts.act
    monkeypatch.setattr(policy.experts, "act", lambda batch, **kw: seen.setdefault("b", batch) and real(batch, **kw))
    obs = observation()
    policy.plan(obs.images, obs.state, "stack the cans")
    images, size = seen["b"]["images"][0], policy.experts.predictive.config.image_size
    wrist = obs.images["wrist"][None, 24:48, 16:48]  # rows 24..47, columns 16..47 of the 48 x 64 frame
    assert torch.equal(images[2], resize_frames(wrist, [size, size])[0])
    assert torch.equal(images[1], resize_frames(obs.images["top"][None], [size, size])[0])
