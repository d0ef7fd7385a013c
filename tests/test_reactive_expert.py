"""The reactive expert: per-frame inverse dynamics from DINOv2 tokens and pooled world-model tokens."""

from __future__ import annotations

import pytest
import torch

from harmowam_core.data.windows import future_frame_tokens
from harmowam_core.models.presets import ReactiveExpertConfig
from harmowam_core.models.reactive_expert import ReactiveExpert, pool_channels
from harmowam_core.models.world_model import frame_to_latent


def test_world_model_tokens_pool_and_regroup_per_frame():
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).reshape(2, 3, 8)
    torch.testing.assert_close(pool_channels(x, 2), x.reshape(2, 3, 2, 4).mean(-1))  # 3072 -> 768 alike
    with pytest.raises(ValueError, match="multiple"):
        pool_channels(x, 3)
    hidden = torch.arange(4 * 5).float().view(1, 4, 5).repeat_interleave(3, dim=1)  # 4 latents x 3 tokens
    per_frame = future_frame_tokens(hidden, frame_to_latent(13, 4), chunk=12)  # future frames 1..12
    assert per_frame.shape == (1, 12, 3, 5)
    assert per_frame[0, 0, 0, 0] == 5 and per_frame[0, 4, 0, 0] == 10 and per_frame[0, 11, 0, 0] == 15
    torch.testing.assert_close(future_frame_tokens(hidden[0], frame_to_latent(13, 4), 12), per_frame[0])


@pytest.mark.parametrize(
    ("action_dim", "backbone", "saved"),
    [(7, "conv", {"decoder", "frame_net"}), (14, "conv", {"decoder", "frame_net"}), (7, "dinov2", {"decoder"})],
)
def test_shapes_for_single_and_dual_arm_and_the_latent_ablation(action_dim, backbone, saved):
    """The tiny preset's convolutional encoder trains and is saved; a DINOv2 is frozen and is not."""
    expert = ReactiveExpert(ReactiveExpertConfig(frame_backbone=backbone), action_dim=action_dim, wm_width=128)
    frames = torch.randint(0, 255, (2, 12, 3, 64, 64), dtype=torch.uint8)
    assert expert(frames, torch.randn(2, 12, 16, 128)).shape == (2, 12, action_dim)
    assert expert(frames, None).shape == (2, 12, action_dim)
    assert {k.split(".")[0] for k in expert.state_dict()} == saved


def test_overfits_a_fixed_batch_and_masks_padding():
    torch.manual_seed(0)
    expert = ReactiveExpert(ReactiveExpertConfig(augment_shift=0), action_dim=7, wm_width=64)  # noise frames
    frames = torch.randint(0, 255, (2, 12, 3, 64, 64), dtype=torch.uint8)
    wm_tokens = torch.randn(2, 12, 16, 64)
    actions = torch.randn(2, 12, 7)
    opt = torch.optim.AdamW(expert.parameters(), lr=3e-3)
    first = expert.loss(frames, wm_tokens, actions).item()
    for _ in range(60):
        loss = expert.loss(frames, wm_tokens, actions)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 3
    pad = torch.zeros(2, 12, dtype=torch.bool)
    pad[:, 6:] = True
    garbage = actions.clone()
    garbage[:, 6:] = 100.0
    expert.eval()  # no random shifts: the same frames in both calls
    torch.testing.assert_close(
        expert.loss(frames, wm_tokens, garbage, pad), expert.loss(frames, wm_tokens, actions, pad)
    )
