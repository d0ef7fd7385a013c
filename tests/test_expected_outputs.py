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
        [-0.003519, -0.001010, 0.001259, -0.005520, 0.002842, 0.000720, -0.030836],
        [-0.003032, -0.000401, 0.002244, -0.005779, 0.002767, -0.000113, -0.022694],
        [-0.002440, -0.000820, 0.001933, -0.006202, 0.003926, 0.000355, -0.014722],
    ]
)
REACTIVE = np.array(
    [
        [0.008063, -0.002171, 0.000385, 0.008016, 0.005709, 0.011219, 0.408531],
        [0.004823, -0.002382, 0.003934, 0.004463, 0.005493, 0.009890, 0.565527],
        [0.004132, 0.003288, 0.008734, 0.000668, 0.004724, 0.010418, 0.480804],
    ]
)
P_INTERACTION = 0.2727605
