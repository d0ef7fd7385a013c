"""The process-adaptive gate learns a separable labelling and ignores unlabelled frames."""

from __future__ import annotations

import pytest
import torch

from harmowam_core.models.gate import Gate
from harmowam_core.models.presets import GateModelConfig


def separable(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens of 2 cameras whose mean along one direction decides the label (interaction when positive)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(n, 2, 16, 32, generator=g)
    labels = (torch.arange(n) % 2).long()
    tokens[..., 0] += (labels.float() * 2 - 1).view(n, 1, 1) * 1.5
    return tokens, labels


def test_the_gate_learns_a_separable_labelling_and_generalises():
    torch.manual_seed(0)
    gate = Gate(GateModelConfig(hidden_sizes=[32]), token_width=32, num_cameras=2)
    tokens, labels = separable(128)
    opt = torch.optim.AdamW(gate.parameters(), lr=1e-2)
    first = gate.loss(tokens, labels).item()
    for _ in range(100):
        loss = gate.loss(tokens, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 5
    held_tokens, held_labels = separable(64, seed=1)
    accuracy = ((gate.probability(held_tokens) >= 0.5).long() == held_labels).float().mean().item()
    assert accuracy >= 0.95


def test_unlabelled_frames_do_not_count_and_shapes_are_checked():
    gate = Gate(GateModelConfig(), token_width=32, num_cameras=2)
    tokens, labels = separable(8)
    masked = labels.clone()
    masked[:4] = -1
    expected = torch.nn.functional.binary_cross_entropy_with_logits(gate(tokens)[4:], labels[4:].float())
    torch.testing.assert_close(gate.loss(tokens, masked), expected)
    assert gate.loss(tokens, torch.full_like(labels, -1)).item() == 0.0
    with pytest.raises(ValueError, match="expected tokens"):
        gate(tokens[:, :1])


def test_the_gate_sees_where_things_are_in_the_image():
    """Labels set by which side of the image a feature sits on: a mean over the tokens cannot tell, the
    pooled grid can."""
    g = torch.Generator().manual_seed(0)
    n = 64
    labels = torch.randint(0, 2, (n,), generator=g)
    tokens = torch.randn(n, 1, 16, 8, generator=g) * 0.1
    grid = tokens.view(n, 1, 4, 4, 8)
    for i, label in enumerate(labels.tolist()):
        grid[i, 0, :, 2 * label : 2 * label + 2, 0] += 2.0  # left half for 0, right half for 1
    gate = Gate(GateModelConfig(hidden_sizes=[16], pool_grid=2), token_width=8, num_cameras=1)
    opt = torch.optim.Adam(gate.parameters(), lr=1e-2)
    for _ in range(100):
        loss = gate.loss(tokens, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert ((gate.probability(tokens) >= 0.5).long() == labels).float().mean() == 1.0
    with pytest.raises(ValueError, match="square"):
        gate(tokens[:, :, :15])


def test_with_motion_the_gate_tells_apart_frames_that_differ_only_in_how_they_move():
    """Two classes with the same current tokens, one moved in from the left, one from the right: without the
    previous tokens no gate can beat chance; with them (`motion`), it learns the labelling. No previous tokens
    means no motion."""
    g = torch.Generator().manual_seed(0)
    n = 64
    labels = (torch.arange(n) % 2).long()
    tokens = torch.randn(n // 2, 1, 16, 8, generator=g).repeat_interleave(2, dim=0)  # pairs share the frame
    previous = tokens.clone()
    previous[:, 0, :, 0] += (labels.float() * 2 - 1).view(n, 1)  # where it was a step before decides
    torch.manual_seed(0)
    gate = Gate(GateModelConfig(hidden_sizes=[16], pool_grid=2), token_width=8, num_cameras=1)
    assert gate.config.motion
    opt = torch.optim.Adam(gate.parameters(), lr=1e-2)
    for _ in range(150):
        loss = gate.loss(tokens, labels, previous)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert ((gate.probability(tokens, previous) >= 0.5).long() == labels).float().mean() == 1.0
    torch.testing.assert_close(gate(tokens), gate(tokens, tokens))
    still = Gate(GateModelConfig(hidden_sizes=[16], pool_grid=2, motion=False), token_width=8, num_cameras=1)
    torch.testing.assert_close(still(tokens[::2]), still(tokens[1::2]))  # blind to the previous tokens


def test_a_gate_that_reads_the_world_model_learns_what_only_the_imagined_frames_show():
    """Identical visual tokens, labels decided by one latent frame of the world model's hidden tokens (the
    imagined future): a gate reading them learns it; one that does not is blind to them."""
    g = torch.Generator().manual_seed(0)
    n, frames, per_frame, width = 64, 5, 4, 8
    labels = (torch.arange(n) % 2).long()
    tokens = torch.randn(1, 1, 16, 8, generator=g).expand(n, 1, 16, 8)
    hidden = torch.randn(n, frames, per_frame, width, generator=g) * 0.1
    hidden[:, 3, :, 0] += (labels.float() * 2 - 1).view(n, 1)  # the fourth latent frame decides
    hidden = hidden.reshape(n, frames * per_frame, width)
    torch.manual_seed(0)
    config = GateModelConfig(hidden_sizes=[16], pool_grid=2)
    gate = Gate(config, token_width=8, num_cameras=1, world_model=(frames, width))
    opt = torch.optim.Adam(gate.parameters(), lr=1e-2)
    for _ in range(100):
        loss = gate.loss(tokens, labels, wm_hidden=hidden)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert ((gate.probability(tokens, wm_hidden=hidden) >= 0.5).long() == labels).float().mean() == 1.0
    with pytest.raises(ValueError, match="world-model tokens"):
        gate(tokens)
    with pytest.raises(ValueError, match="world-model tokens"):
        gate(tokens, wm_hidden=hidden[:, :-1])
    blind = Gate(config, token_width=8, num_cameras=1)  # no world-model layout given: visual tokens only
    torch.testing.assert_close(blind(tokens, wm_hidden=hidden), blind(tokens))
    off = Gate(GateModelConfig(hidden_sizes=[16], pool_grid=2, world_model=False), 8, 1, world_model=(frames, width))
    assert off.world_model is None and off.mlp[0].normalized_shape == (8 * 4 * 2,)
