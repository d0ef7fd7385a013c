"""The frozen encoders of stage 2: tiny ones are fixed by their configuration, checkpoints load locally only."""

from __future__ import annotations

import pytest
import torch

from harmowam_core.errors import HarmoWAMError
from harmowam_core.models import encoders


def test_tiny_encoders_give_patch_tokens_and_are_frozen_and_reproducible():
    frames = torch.randint(0, 255, (2, 3, 96, 96), dtype=torch.uint8)
    siglip = encoders.image_encoder(None, image_size=64)
    tokens = siglip(pixel_values=encoders.pixels(frames, 64, encoders.SIGLIP_MEAN, encoders.SIGLIP_STD))
    assert tokens.last_hidden_state.shape == (2, 16, encoders.width(siglip))  # 64 px in 16 px patches
    dino = encoders.frame_encoder(None, image_size=64)
    feats = dino(pixel_values=encoders.pixels(frames, 64, encoders.IMAGENET_MEAN, encoders.IMAGENET_STD))
    assert feats.last_hidden_state.shape == (2, 1 + 64, encoders.width(dino))  # CLS + 8 px patches
    for model in (siglip, dino):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
    again = encoders.image_encoder(None, image_size=64)
    for a, b in zip(siglip.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_pixels_normalise_and_resize():
    white = torch.full((1, 3, 32, 48), 255, dtype=torch.uint8)
    x = encoders.pixels(white, 16, encoders.SIGLIP_MEAN, encoders.SIGLIP_STD)
    assert x.shape == (1, 3, 16, 16)
    torch.testing.assert_close(x, torch.ones_like(x))  # (1 - 0.5) / 0.5


def test_checkpoints_resolve_locally_or_fail_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert encoders.resolve(str(tmp_path)) == tmp_path
    with pytest.raises(HarmoWAMError, match="huggingface-cli download facebook/dinov2-base"):
        encoders.resolve("facebook/dinov2-base")
    with pytest.raises(HarmoWAMError, match="not a local directory"):
        encoders.resolve(str(tmp_path / "missing" / "deeper"))


def test_convolutional_encoder_gives_a_token_grid_and_keypoints():
    net = encoders.ConvEncoder(96, width=32)
    pixels = encoders.pixels(torch.randint(0, 255, (2, 3, 96, 96), dtype=torch.uint8), 96, (0.5,) * 3, (0.5,) * 3)
    tokens, keypoints = net.tokens_and_keypoints(pixels)
    assert tokens.shape == (2, 144, 32) and encoders.width(net) == 32
    assert keypoints.shape == (2, 32, 2) and bool((keypoints.abs() <= 1.0).all())
    with pytest.raises(ValueError, match="multiple of 8"):
        encoders.ConvEncoder(60)


def test_random_shift_moves_stacked_frames_together_and_keeps_the_size():
    g = torch.Generator().manual_seed(0)
    current = torch.rand(16, 3, 24, 24, generator=g)
    stacked = torch.cat([current, current], dim=1)  # a camera's current and previous image, here equal
    shifted = encoders.random_shift(stacked, 4, generator=torch.Generator().manual_seed(1))
    assert shifted.shape == stacked.shape
    torch.testing.assert_close(shifted[:, :3], shifted[:, 3:])  # one shift for both
    assert not torch.equal(shifted[:, :3], current)  # 16 images: some offset is not (4, 4)
    assert encoders.random_shift(current, 0) is current
