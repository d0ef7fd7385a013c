"""The stage-1 world model: shapes, flow-matching training, save/load, the paper architecture on meta."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harmowam_core.errors import HarmoWAMError
from harmowam_core.models.presets import PRESETS, WorldModelConfig
from harmowam_core.models.world_model import WorldModel, build_transformer, parameter_count

INSTRUCTION = "stack the cans"


def tiny(**changes) -> WorldModelConfig:
    return dataclasses.replace(WorldModelConfig(), **changes)


def moving_square(batch: int, frames: int = 13, size: int = 32) -> torch.Tensor:
    """uint8 videos (B, T, 3, H, W) of a bright square sliding right on a dark background."""
    video = torch.full((batch, frames, 3, size, size), 30, dtype=torch.uint8)
    for b in range(batch):
        for t in range(frames):
            x = 2 + t + 3 * b
            video[b, t, :, 10 + b : 18 + b, x : x + 8] = torch.tensor([220, 180, 40], dtype=torch.uint8).view(3, 1, 1)
    return video


def test_prediction_shapes_for_thirteen_frames():
    torch.manual_seed(0)
    wm = WorldModel.from_config(tiny())
    out = wm.predict(moving_square(2, size=96)[:, 0], [INSTRUCTION] * 2, steps=2)
    assert out.frames.shape == (2, 13, 3, 64, 64)  # resized to the preset's resolution
    assert float(out.frames.min()) >= 0.0 and float(out.frames.max()) <= 1.0
    assert out.latents.shape == (2, 13, 48, 16, 16)  # pixel codec: one 4x4 space-to-depth latent per frame
    assert out.hidden.shape == (2, 13 * 8 * 8, wm.hidden_size)
    # the current frame is the condition, returned as it came in (to the codec's precision)
    current = wm.to_model_frames(moving_square(2, size=96)[:, 0])
    torch.testing.assert_close(out.frames[:, 0] * 2 - 1, current, atol=1e-5, rtol=0)


def test_overfits_a_fixed_batch():
    torch.manual_seed(0)
    wm = WorldModel.from_config(tiny(resolution=[32, 32]))
    video = moving_square(2)
    opt = torch.optim.AdamW(wm.transformer.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = wm.training_loss(video, [INSTRUCTION] * 2, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2, losses  # 1.93 -> 0.79 when written


def test_the_previous_frame_is_a_condition_and_none_means_a_still_scene():
    torch.manual_seed(0)
    wm = WorldModel.from_config(tiny(resolution=[32, 32]))
    video = moving_square(2)

    def predict(previous):
        return wm.predict(
            video[:, 1], [INSTRUCTION] * 2, steps=2, generator=torch.Generator().manual_seed(0), previous=previous
        ).frames

    torch.testing.assert_close(predict(None), predict(video[:, 1]), atol=0, rtol=0)
    assert not torch.allclose(predict(video[:, 0]), predict(video[:, 1]))
    gen = torch.Generator().manual_seed(0)
    still = wm.training_loss(video[:, 1:], [INSTRUCTION] * 2, generator=gen)
    gen = torch.Generator().manual_seed(0)
    moving = wm.training_loss(video[:, 1:], [INSTRUCTION] * 2, generator=gen, previous=video[:, 0])
    assert still.item() != moving.item()
    single = WorldModel.from_config(tiny(resolution=[32, 32], context_frames=1))
    assert single.transformer.config.in_channels == 2 * 48 and wm.transformer.config.in_channels == 3 * 48
    assert single.encode_context(video[:, 1], video[:, 0]) is None


def test_padded_frames_do_not_count():
    torch.manual_seed(0)
    wm = WorldModel.from_config(tiny(resolution=[32, 32]))
    video = moving_square(1)
    pad = torch.zeros(1, 13, dtype=torch.bool)
    pad[0, 7:] = True
    gen = torch.Generator().manual_seed(1)
    base = wm.training_loss(video, [INSTRUCTION], pad, generator=gen)
    garbage = video.clone()
    garbage[0, 7:] = torch.randint(0, 255, garbage[0, 7:].shape, dtype=torch.uint8)
    # the transformer sees the garbage frames through attention, but their own errors are masked out
    gen = torch.Generator().manual_seed(1)
    assert wm.training_loss(garbage, [INSTRUCTION], pad, generator=gen).item() != pytest.approx(0.0)
    gen = torch.Generator().manual_seed(1)
    full = wm.training_loss(video, [INSTRUCTION], None, generator=gen)
    assert base.item() != full.item()


def test_save_and_load_give_identical_predictions(tmp_path):
    torch.manual_seed(0)
    wm = WorldModel.from_config(tiny(resolution=[32, 32]))
    wm.save_pretrained(tmp_path / "wm")
    loaded = WorldModel.from_pretrained(tmp_path / "wm")
    assert loaded.config == wm.config
    current = moving_square(1)[:, 0]
    a = wm.predict(current, [INSTRUCTION], generator=torch.Generator().manual_seed(3))
    b = loaded.predict(current, [INSTRUCTION], generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.frames, b.frames, atol=0, rtol=0)
    torch.testing.assert_close(a.hidden, b.hidden, atol=0, rtol=0)


def test_wan_vae_codec_and_the_diffusers_layout(tmp_path):
    torch.manual_seed(0)
    config = tiny(codec="wan", resolution=[32, 32], latent_channels=8)
    wm = WorldModel.from_config(config)
    wm.save_pretrained(tmp_path / "wan")
    (tmp_path / "wan" / "harmowam_world_model.json").unlink()  # a bare diffusers layout: config from the recipe
    loaded = WorldModel.from_pretrained(tmp_path / "wan", config)
    current = moving_square(1)[:, 0]
    a = wm.predict(current, [INSTRUCTION], steps=2, generator=torch.Generator().manual_seed(0))
    b = loaded.predict(current, [INSTRUCTION], steps=2, generator=torch.Generator().manual_seed(0))
    assert a.frames.shape == (1, 13, 3, 32, 32) and a.latents.shape == (1, 13, 8, 8, 8)
    torch.testing.assert_close(a.frames, b.frames, atol=0, rtol=0)


def test_instruction_embeddings_are_cached():
    wm = WorldModel.from_config(tiny())
    calls = []
    tokenizer = wm.tokenizer

    def counting(*args, **kwargs):
        calls.append(args)
        return tokenizer(*args, **kwargs)

    wm.tokenizer = counting
    first = wm.encode_text([INSTRUCTION, INSTRUCTION])
    second = wm.encode_text([INSTRUCTION])
    assert len(calls) == 1 and first.shape == (2, 64, 64)
    torch.testing.assert_close(first[:1], second)


def test_paper_architecture_on_the_meta_device():
    config = dataclasses.replace(WorldModelConfig(), **PRESETS["paper"]["world_model"])
    with torch.device("meta"):
        transformer = build_transformer(config, config.latent_channels)
    assert 4.9e9 < parameter_count(transformer) < 5.1e9  # Wan2.2-TI2V-5B
    assert config.num_attention_heads * config.attention_head_dim == 3072
    assert len(transformer.blocks) == 30


def test_loading_fails_clearly(tmp_path):
    with pytest.raises(HarmoWAMError, match="not a local directory"):
        WorldModel.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarmoWAMError, match="cannot load"):
        WorldModel.from_pretrained(tmp_path / "empty", tiny())
    with pytest.raises(HarmoWAMError, match="pretrained"):
        WorldModel.from_config(tiny(text_encoder="umt5"))


def test_wan22_vae_architecture_compresses_16x_in_space_and_4x_in_time():
    from harmowam_core.models.world_model import build_codec

    paper = dataclasses.replace(WorldModelConfig(), **PRESETS["paper"]["world_model"])
    with torch.device("meta"):
        assert build_codec(paper).vae.config.decoder_base_dim == 256
    torch.manual_seed(0)
    codec = build_codec(dataclasses.replace(paper, vae_base_dim=8)).eval()  # same architecture, narrow
    with torch.no_grad():
        latents = codec.encode(torch.rand(1, 3, 5, 32, 64) * 2 - 1)
        assert latents.shape == (1, 48, 2, 2, 4)  # frame 0 alone, then 4 frames per latent; 16x16 pixels
        assert codec.decode(latents).shape == (1, 3, 5, 32, 64)


def test_only_the_transformer_is_trained_and_checkpointed():
    wm = WorldModel.from_config(tiny(codec="wan", resolution=[32, 32]))
    assert {k.split(".")[0] for k in wm.state_dict()} == {"transformer"}  # no frozen text encoder or VAE
    assert {id(p) for p in wm.parameters()} == {id(p) for p in wm.transformer.parameters()}
    wm.to(torch.float64)  # .to() still moves the frozen parts with the transformer
    assert next(wm.text_encoder.parameters()).dtype == torch.float64
    assert next(wm.codec.parameters()).dtype == torch.float64
    wm.train()
    assert wm.transformer.training and not wm.text_encoder.training  # T5's dropout stays off


def test_residual_pixel_codec_is_exact_and_an_empty_future_is_a_still_scene():
    from harmowam_core.models.world_model import PixelCodec

    codec = PixelCodec(4, residual=True)
    video = moving_square(2, size=32).float().div(127.5).sub(1).transpose(1, 2)  # (B, 3, T, H, W) in [-1, 1]
    latents = codec.encode(video)
    torch.testing.assert_close(codec.decode(latents), video)
    torch.testing.assert_close(latents[:, :, :1], PixelCodec(4).encode(video[:, :, :1]))  # the first is absolute
    torch.testing.assert_close(codec.absolute(latents), PixelCodec(4).encode(video))
    still = latents.clone()
    still[:, :, 1:] = 0.0
    torch.testing.assert_close(codec.decode(still), video[:, :, :1].expand_as(video))
    scaled = PixelCodec(4, residual=True, scale=8.0)
    torch.testing.assert_close(scaled.encode(video)[:, :, 1:], 8.0 * latents[:, :, 1:])
    torch.testing.assert_close(scaled.decode(scaled.encode(video)), video)


def test_the_sampler_lands_on_the_predicted_clean_future():
    """With `prediction: sample`, each Euler step is x0 + sigma' / sigma (x_t - x0): a transformer that always
    answers the true clean latents yields the true future exactly, from any noise and any step count."""
    wm = WorldModel.from_config(tiny(resolution=[32, 32]))
    video = moving_square(2)
    truth = wm.encode_video(video)
    real = wm.denoise  # still run (the hidden tokens come from it), but answer the truth
    wm.denoise = lambda latents, t, text, context=None: (real(latents, t, text, context), truth)[1]
    for steps in (1, 3, 5):
        out = wm.predict(video[:, 0], [INSTRUCTION] * 2, steps=steps, generator=torch.Generator().manual_seed(steps))
        torch.testing.assert_close(out.frames, video.float() / 255.0, atol=1e-5, rtol=0)


def test_tiny_text_encoders_are_identical_whatever_the_global_seed():
    torch.manual_seed(1)
    a = WorldModel.from_config(tiny()).encode_text([INSTRUCTION])
    torch.manual_seed(2)
    b = WorldModel.from_config(tiny()).encode_text([INSTRUCTION])
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_the_sampler_uses_its_own_shift():
    """`sample_shift` sets the sampler's noise levels (the training shift stays `shift`)."""
    seen: dict[object, list[float]] = {}
    for sample_shift in (None, 300.0):
        wm = WorldModel.from_config(tiny(resolution=[32, 32], sample_shift=sample_shift))
        real = wm.velocity
        levels = seen.setdefault(sample_shift, [])

        def recording(latents, t, text, context=None, real=real, levels=levels):
            levels.append(float(t[0]) / 1000)
            return real(latents, t, text, context)

        wm.velocity = recording
        wm.predict(moving_square(1)[:, 0], [INSTRUCTION], steps=5)
    assert len(seen[None]) == len(seen[300.0]) == 5
    assert seen[None][0] == seen[300.0][0] == pytest.approx(1.0)
    assert 0.85 < seen[None][1] < 0.95 and seen[300.0][1] > 0.99  # shift 3: 0.90; shift 300: 0.999
    assert all(b > a for a, b in zip(seen[None][1:], seen[300.0][1:], strict=True))
