"""The predictive expert: an action DiT conditioned on world-model, SigLIP and T5 tokens."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harmowam_core.models.predictive_expert import DiTBlock, PredictiveExpert
from harmowam_core.models.presets import PRESETS, PredictiveExpertConfig
from harmowam_core.models.world_model import parameter_count

INSTRUCTION = "stack the cans"


def batch(b: int, arms: int, cams: int = 3):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (b, cams, 3, 64, 64), dtype=torch.uint8, generator=g)
    return images, torch.randn(b, 32, 64, generator=g), torch.randn(b, 7 * arms, generator=g)


SIGLIP = {"image_backbone": "siglip", "image_size": 64}  # a small random frozen SigLIP: 16 px patches


def small(**kw) -> PredictiveExpertConfig:
    """The tiny preset's expert at half its width and depth, reading the current state only: these tests are about
    the DiT's mechanics, not its size (obs_steps 2 is tested in test_train_experts)."""
    sizes = {"hidden_size": 64, "num_layers": 2, "num_attention_heads": 2, "obs_steps": 1}
    return PredictiveExpertConfig(**{**sizes, **kw})


def conditioned(expert: PredictiveExpert, images, wm_tokens, n: int):
    """The condition tokens and the cameras' keypoints (None unless the expert reads them)."""
    tokens, keypoints = expert.image_features(images)
    return expert.condition(None, wm_tokens, [INSTRUCTION] * n, tokens), keypoints


@pytest.mark.parametrize("arms", [1, 2])
def test_shapes_for_single_and_dual_arm_and_the_latent_ablation(arms):
    expert = PredictiveExpert(small(**SIGLIP), action_dim=7 * arms, state_dim=7 * arms, wm_width=64, num_cameras=3)
    images, wm_tokens, state = batch(2, arms)
    cond = expert.condition(images, wm_tokens, [INSTRUCTION] * 2)
    assert cond.shape == (2, 32 + 3 * 16 + 32, 64)  # world model + 3 cameras x 16 SigLIP tokens + text
    assert expert.condition(images, None, [INSTRUCTION] * 2).shape == (2, 3 * 16 + 32, 64)
    assert expert.sample(cond, state, steps=3).shape == (2, 12, 7 * arms)
    assert not any("vision_model" in k or "encoder.block" in k for k in expert.state_dict())  # frozen encoders


def test_the_tiny_convolutional_encoder_trains_with_the_expert():
    """Tiny preset: 96 px images in an 8 px grid (12 x 12 tokens per camera), weights in the state dict, and the
    denoising loss reaches them."""
    expert = PredictiveExpert(small(), action_dim=7, state_dim=7, wm_width=64, num_cameras=3)
    images, wm_tokens, state = batch(2, 1)
    cond, keypoints = conditioned(expert, images, wm_tokens, 2)
    assert cond.shape == (2, 32 + 3 * 144 + 32, 64)
    assert keypoints.shape == (2, 3 * 64 * 2)  # every camera's (x, y) per feature channel
    assert bool((keypoints.abs() <= 1.0).all())
    assert any(k.startswith("image_net.") for k in expert.state_dict())
    torch.nn.init.normal_(expert.action_out.weight)  # zero-initialised (adaLN-zero): no gradient flows until it moves
    torch.nn.init.normal_(expert.ada_out[1].weight)  # nor into the adaLN condition until this does
    expert.loss(cond, state, torch.randn(2, 12, 7), keypoints=keypoints).backward()
    assert expert.image_net.net[0].weight.grad.abs().sum() > 0
    assert expert.keypoint_embed[0].weight.grad.abs().sum() > 0  # the keypoints reach the adaLN condition
    with pytest.raises(ValueError, match="keypoints"):
        expert.loss(cond, state, torch.randn(2, 12, 7))


def test_keypoints_are_off_with_siglip_and_when_switched_off():
    for config in (small(**SIGLIP), small(keypoints=False)):
        expert = PredictiveExpert(config, action_dim=7, state_dim=7, wm_width=64, num_cameras=3)
        images, wm_tokens, state = batch(2, 1)
        cond, keypoints = conditioned(expert, images, wm_tokens, 2)
        assert expert.keypoint_embed is None and keypoints is None
        assert expert.sample(cond, state, steps=2).shape == (2, 12, 7)


def test_overfits_a_fixed_batch():
    torch.manual_seed(0)
    expert = PredictiveExpert(small(), action_dim=7, state_dim=7, wm_width=64, num_cameras=3)
    images, wm_tokens, state = batch(4, 1)
    actions = torch.randn(4, 12, 7, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(expert.parameters(), lr=1e-3)
    losses = []
    for step in range(80):
        cond, keypoints = conditioned(expert, images, wm_tokens, 4)
        loss = expert.loss(cond, state, actions, generator=torch.Generator().manual_seed(step % 4), keypoints=keypoints)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 / 2, losses


def test_paper_preset_is_a_28_block_one_billion_parameter_dit_on_the_meta_device():
    config = dataclasses.replace(PredictiveExpertConfig(), **PRESETS["paper"]["predictive_expert"])
    with torch.device("meta"):
        blocks = torch.nn.ModuleList(DiTBlock(config.hidden_size, config.num_attention_heads) for _ in range(28))
    assert config.num_layers == 28
    assert 0.95e9 < parameter_count(blocks) < 1.1e9


def test_bounds_keep_a_long_sampler_inside_the_demonstrated_range():
    """100 DDIM steps start at t = 99, where almost no signal is left: unclamped, the clean-chunk estimate
    multiplies any noise error ~60-fold and the chunk runs away; clamped per action number, it stays inside."""
    torch.manual_seed(0)
    config = small(prediction="epsilon")  # the paper's noise prediction
    expert = PredictiveExpert(config, action_dim=7, state_dim=7, wm_width=64, num_cameras=3)
    images, wm_tokens, state = batch(2, 1)
    with torch.no_grad():
        cond, keypoints = conditioned(expert, images, wm_tokens, 2)
    low, high = -torch.linspace(1.0, 3.0, 7), torch.linspace(0.5, 2.0, 7)
    free = expert.sample(cond, state, steps=100, generator=torch.Generator().manual_seed(0), keypoints=keypoints)
    assert free.abs().max() > 10 * high.max()
    g = torch.Generator().manual_seed(0)
    bounded = expert.sample(cond, state, steps=100, generator=g, bounds=(low, high), keypoints=keypoints)
    assert bool(((bounded >= low - 1e-4) & (bounded <= high + 1e-4)).all())


def test_clean_chunk_prediction_samples_what_the_network_predicts():
    """With `prediction` "sample" the DiT outputs the clean chunk: a network that always predicts the same chunk
    samples exactly that chunk (the DDIM steps re-derive the noise it implies), clamped to the bounds."""
    expert = PredictiveExpert(small(), action_dim=7, state_dim=7, wm_width=64, num_cameras=3)
    chunk = torch.linspace(-2.0, 2.0, 12 * 7).reshape(1, 12, 7)
    expert.forward = lambda noisy, t, cond, state, keypoints=None: chunk.expand(noisy.shape[0], -1, -1)
    cond, state = torch.zeros(2, 5, 64), torch.zeros(2, 7)
    torch.testing.assert_close(expert.sample(cond, state, steps=10), chunk.expand(2, -1, -1), atol=1e-4, rtol=0)
    low, high = -torch.ones(7), torch.ones(7)
    bounded = expert.sample(cond, state, steps=10, bounds=(low, high))
    torch.testing.assert_close(bounded, chunk.clamp(-1, 1).expand(2, -1, -1), atol=1e-4, rtol=0)
    loss = expert.loss(cond, state, chunk.expand(2, -1, -1))  # the loss compares with the clean chunk
    assert float(loss) < 1e-10


@pytest.mark.parametrize("arms", [1, 2])
def test_the_gripper_head_gives_one_probability_per_chunk_step_and_arm(arms):
    expert = PredictiveExpert(small(gripper_head=True), 7 * arms, 7 * arms, wm_width=64, num_cameras=3)
    images, wm_tokens, state = batch(2, arms)
    cond, keypoints = conditioned(expert, images, wm_tokens, 2)
    assert expert.gripper_index == [6, 13][:arms]
    p = expert.gripper_probability(cond, state, keypoints)
    assert p.shape == (2, 12, arms) and bool(((p >= 0) & (p <= 1)).all())
    padded = torch.zeros(2, 12, dtype=torch.bool)
    padded[:, 6:] = True  # the padded steps' labels do not count
    closed = torch.zeros(2, 12, arms, dtype=torch.bool)
    loss = expert.gripper_loss(cond, state, closed, padded, keypoints)
    flipped = closed.clone()
    flipped[:, 6:] = True
    torch.testing.assert_close(loss, expert.gripper_loss(cond, state, flipped, padded, keypoints))


def test_a_gripper_head_needs_seven_numbers_per_arm_and_is_absent_by_default():
    with pytest.raises(ValueError, match="7 numbers per arm"):
        PredictiveExpert(small(gripper_head=True), action_dim=6, state_dim=6, wm_width=64, num_cameras=1)
    expert = PredictiveExpert(small(), action_dim=6, state_dim=6, wm_width=64, num_cameras=1)
    images, wm_tokens, state = batch(1, 1, cams=1)
    cond, keypoints = conditioned(expert, images, wm_tokens, 1)
    with pytest.raises(ValueError, match="no gripper head"):
        expert.gripper_logits(cond, state[:, :6], keypoints)
