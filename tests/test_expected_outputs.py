"""Fixed-seed expected outputs, the diffusers way: slices of the world model's imagined frames and of both experts'
chunks and the gate's probability, from tiny models whose weights are a fixed random draw (a trained model's
weights are not zero-initialised, so every layer must matter here). A refactor that changes any number the models
compute changes these slices; a deliberate change to a model updates them in the same commit, and says so."""

from __future__ import annotations

import numpy as np
import torch

from harmowam_core.config import load_recipe
from harmowam_core.models.experts import Experts
from harmowam_core.models.world_model import WorldModel
from harmowam_core.policy.bundle import export_bundle, untrained_run
from harmowam_core.policy.policy import HarmoWAMPolicy

CAMERAS = ["front", "top", "wrist"]


def _perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter plus 0.05 x a fixed normal draw, in name order (so the draw does not depend on build order)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda item: item[0]):
            p.add_(0.05 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return model


def test_world_model_and_experts_give_the_expected_outputs_at_a_fixed_seed(tmp_path):
    run = untrained_run(tmp_path / "run", load_recipe("stack_cans"), resolution=32, seed=0)
    _perturbed(WorldModel.from_pretrained(run / "wm" / "model"), 1).save_pretrained(run / "wm" / "model")
    _perturbed(Experts.from_pretrained(run / "experts" / "model"), 2).save_pretrained(run / "experts" / "model")
    bundle = export_bundle(run, tmp_path / "bundles", name="fixed")
    rng = np.random.default_rng(0)
    images = {c: rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for c in CAMERAS}
    previous = {c: rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for c in CAMERAS}
    state = rng.normal(size=7).astype(np.float32)
    policy = HarmoWAMPolicy.from_bundle(bundle, router="gate", seed=0)
    plan = policy.plan(images, state, "stack the cans", previous)

    np.testing.assert_allclose(plan.imagined[[1, 6, 12], 5, 7:10, 0].astype(int), IMAGINED, atol=1)  # uint8 rounding
    np.testing.assert_allclose(plan.predictive[[0, 5, 11]], PREDICTIVE, rtol=1e-3, atol=2e-6)
    np.testing.assert_allclose(plan.reactive[[0, 5, 11]], REACTIVE, rtol=1e-3, atol=2e-6)
    np.testing.assert_allclose(plan.p_interaction, P_INTERACTION, atol=1e-6)


IMAGINED = np.array([[56, 169, 82], [44, 168, 85], [60, 158, 82]], dtype=np.uint8)
PREDICTIVE = np.array(
    [
        [-0.000439, -0.011372, 0.001922, 0.002310, 0.001948, -0.003780, 0.094347],
        [-0.000331, -0.012176, 0.001491, 0.003663, -0.000274, -0.003585, 0.064797],
        [-0.001041, -0.012985, 0.000867, 0.004346, -0.001005, -0.004824, 0.024185],
    ]
)
REACTIVE = np.array(
    [
        [-0.006174, -0.002672, 0.004760, 0.003908, 0.008606, 0.005302, -0.149370],
        [-0.002015, 0.007570, 0.002640, 0.000273, 0.008268, 0.002283, -0.436935],
        [-0.002455, -0.001469, -0.004385, -0.004361, 0.006273, 0.000311, -0.406725],
    ]
)
P_INTERACTION = 0.9055247
