"""The one window rule (clamp at the episode's last frame, mark the padding) and the shared stage-2 inputs."""

from __future__ import annotations

import numpy as np
import torch

from harmowam_core.data.windows import crop_pixels, expert_inputs, resize_frames, window
from harmowam_core.models.world_model import frame_to_latent


def test_a_window_clamps_at_the_last_frame_and_marks_the_padding():
    idx, pad = window(3, 6, 5)
    np.testing.assert_array_equal(idx, [3, 4, 5, 5, 5])
    np.testing.assert_array_equal(pad, [False, False, False, True, True])
    idx, pad = window(0, 20, 4)
    np.testing.assert_array_equal(idx, [0, 1, 2, 3])
    assert not pad.any()


def test_resize_frames_keeps_uint8_and_channels_first():
    frames = np.full((2, 8, 12, 3), 200, dtype=np.uint8)
    out = resize_frames(frames, [4, 6])
    assert out.shape == (2, 3, 4, 6) and out.dtype == torch.uint8 and int(out.min()) == 200
    assert resize_frames(frames, [8, 12]).shape == (2, 3, 8, 12)


def test_a_crop_cuts_its_box_out_of_each_frame_before_resizing():
    frames = np.arange(2 * 8 * 12 * 3, dtype=np.int64).reshape(2, 8, 12, 3).astype(np.uint8)
    # [top, left, height, width] = rows 2..5 and columns 3..8 of the 8 x 12 frame: at its own size, exact
    box = resize_frames(frames, [4, 6], crop=[0.25, 0.25, 0.5, 0.5])
    assert torch.equal(box, torch.from_numpy(frames[:, 2:6, 3:9]).permute(0, 3, 1, 2))
    # enlarged: a constant box stays that constant whatever the rest of the frame holds
    marked = np.zeros((1, 8, 12, 3), dtype=np.uint8)
    marked[:, 4:8, 6:12] = 90
    assert torch.equal(
        resize_frames(marked, [16, 16], crop=[0.5, 0.5, 0.5, 0.5]), torch.full((1, 3, 16, 16), 90, dtype=torch.uint8)
    )
    # a sliver rounds to one pixel, never to none, and a box stays inside the axis
    assert crop_pixels(0.0, 0.01, 8) == (0, 1) and crop_pixels(0.99, 0.01, 8) == (7, 8)
    assert crop_pixels(0.9, 0.1 + 1e-12, 10) == (9, 10) and crop_pixels(-0.1, 0.5, 10) == (0, 5)


def test_expert_inputs_regroup_the_tokens_per_future_frame_and_omit_a_missing_previous_image():
    hidden = torch.arange(4).float().repeat_interleave(3).view(12, 1).expand(12, 2)  # 4 latents x 3 tokens, D=2
    frames = torch.zeros(12, 3, 8, 8, dtype=torch.uint8)
    images = torch.zeros(3, 3, 16, 16, dtype=torch.uint8)
    latent = frame_to_latent(13, 4)
    batch = expert_inputs(images, None, torch.zeros(7), "stack", frames, hidden, latent)
    assert "previous_images" not in batch and batch["wm_frame_tokens"].shape == (12, 3, 2)
    assert batch["wm_frame_tokens"][:, 0, 0].tolist() == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    assert "previous_images" in expert_inputs(images, images, torch.zeros(7), "", frames, hidden, latent)
