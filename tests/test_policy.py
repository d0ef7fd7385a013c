"""Policy bundles and the closed-loop policy: a tiny random bundle exported from a run directory reloads on its
own and plans chunks with every router; the newest bundle is found; mistakes are one clear error."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
import yaml

from harmowam_core.envs.base import Observation
from harmowam_core.errors import HarmoWAMError
from harmowam_core.models.experts import Experts, ExpertsConfig, Normalizer
from harmowam_core.models.world_model import WorldModel
from harmowam_core.policy.bundle import export_bundle, newest_bundle, read_bundle
from harmowam_core.policy.policy import HarmoWAMPolicy
from harmowam_core.policy.routers import ROUTERS
from harmowam_core.presets import GateModelConfig, PredictiveExpertConfig, ReactiveExpertConfig, WorldModelConfig
from harmowam_core.recipes import load_recipe

CAMERAS = ["front", "top", "wrist"]


@pytest.fixture
def run_dir(tmp_path):
    """runs/stack_cans with a saved tiny world model and tiny experts, as the two training stages leave it."""
    torch.manual_seed(0)
    root = tmp_path / "runs" / "stack_cans"
    wm = WorldModel.from_config(WorldModelConfig(resolution=[32, 32]))
    wm.save_pretrained(root / "wm" / "model")
    config = ExpertsConfig(
        PredictiveExpertConfig(image_size=32),
        ReactiveExpertConfig(image_size=32),
        GateModelConfig(),
        action_dim=7,
        state_dim=7,
        num_cameras=3,
        wm_width=wm.hidden_size,
        cameras=CAMERAS,
    )
    norm = Normalizer([0.0] * 7, [0.01] * 6 + [0.5], [0.0] * 7, [1.0] * 7)
    experts = Experts(config, norm)
    with torch.no_grad():
        for p in experts.parameters():
            p.add_(0.05 * torch.randn_like(p))
    experts.save_pretrained(root / "experts" / "model")
    report = {"world_model": str((root / "wm" / "model").resolve()), "gate_accuracy": 0.5}
    (root / "experts" / "report.json").write_text(json.dumps(report))
    recipe = load_recipe("stack_cans").to_dict()
    (root / "experts" / "recipe.yaml").write_text(yaml.safe_dump(recipe))
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

    def recording(*args):
        plans.append(real_plan(*args))
        return plans[-1]

    policy.plan = recording
    actions = [policy.act(observation(t)) for t in range(9)]
    assert len(plans) == 3  # at steps 0, 4 and 8
    np.testing.assert_array_equal(np.stack(actions[:4]), plans[0].chunk[:4])
    np.testing.assert_array_equal(np.stack(actions[4:8]), plans[1].chunk[:4])
    assert policy.last_plan is plans[2]


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
