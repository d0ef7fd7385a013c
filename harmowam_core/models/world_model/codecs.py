"""The world model's codecs: frames to latents and back (paper section 3.3).

- `pixel` (`PixelCodec`): a parameter-free space-to-depth of the pixels (exact, nothing to train), the tiny
  preset's, with future frames as differences from the current one.
- `wan` (`WanVAECodec`): diffusers' `AutoencoderKLWan`, the paper's VAE (4x temporal and 16x spatial compression
  in Wan2.2), or a small frame-by-frame one for tests.

`latent_frames` and `frame_to_latent` say which latent frame holds each video frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from torch import nn

from harmowam_core.models.presets import WorldModelConfig


# ------------------------------------------------------------------------------------------------ codecs
class PixelCodec(nn.Module):
    """Frames to latents by space-to-depth: (3, H, W) in [-1, 1] -> (3 f^2, H/f, W/f), one latent per frame.

    With `residual`, every latent after the first holds its frame's difference from the first (the current)
    frame, times `scale`: the flow then only has to carry what moves, and an all-zero future decodes to a still
    scene. The scale can bring those small differences (a std of about 0.12 in a tabletop scene) to the unit
    variance of the flow's noise.
    """

    temporal = 1

    def __init__(self, factor: int, residual: bool = False, scale: float = 1.0):
        super().__init__()
        self.factor, self.residual, self.scale = factor, residual, scale

    @property
    def channels(self) -> int:
        return 3 * self.factor**2

    def encode(self, video: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, C, T, h, w)
        b, c, t, h, w = video.shape
        x = F.pixel_unshuffle(video.transpose(1, 2).reshape(b * t, c, h, w), self.factor)
        x = x.reshape(b, t, -1, h // self.factor, w // self.factor).transpose(1, 2)
        if self.residual:
            x = torch.cat([x[:, :, :1], (x[:, :, 1:] - x[:, :, :1]) * self.scale], dim=2)
        return x

    def absolute(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents with each frame's own content (undoes `residual`)."""
        if not self.residual:
            return latents
        return torch.cat([latents[:, :, :1], latents[:, :, 1:] / self.scale + latents[:, :, :1]], dim=2)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:  # (B, C, T, h, w) -> (B, 3, T, H, W)
        latents = self.absolute(latents)
        b, c, t, h, w = latents.shape
        x = F.pixel_shuffle(latents.transpose(1, 2).reshape(b * t, c, h, w), self.factor)
        return x.reshape(b, t, 3, h * self.factor, w * self.factor).transpose(1, 2)


class WanVAECodec(nn.Module):
    """`AutoencoderKLWan` with its latent normalisation; the first frame is encoded alone (causal), so the
    current frame's latent is the first latent frame."""

    def __init__(self, vae: AutoencoderKLWan):
        super().__init__()
        self.vae = vae
        self.temporal = 2 ** sum(vae.config.temperal_downsample)
        z = vae.config.z_dim
        self.register_buffer("mean", torch.tensor(vae.config.latents_mean[:z]).view(1, z, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(vae.config.latents_std[:z]).view(1, z, 1, 1, 1), persistent=False)

    @property
    def channels(self) -> int:
        return self.vae.config.z_dim

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        z = self.vae.encode(video.to(self.vae.dtype)).latent_dist.mode()
        return ((z - self.mean.to(z)) / self.std.to(z)).to(video.dtype)

    def absolute(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.vae.dtype) * self.std.to(self.vae.dtype) + self.mean.to(self.vae.dtype)
        return self.vae.decode(z).sample.to(latents.dtype)


def latent_frames(num_frames: int, temporal: int) -> int:
    return 1 + (num_frames - 1) // temporal


def frame_to_latent(num_frames: int, temporal: int) -> torch.Tensor:
    """For each video frame, the index of the latent frame that holds it (frame 0 alone in latent 0)."""
    k = torch.arange(num_frames)
    return torch.where(k == 0, 0, 1 + (k - 1) // temporal)


def build_codec(config: WorldModelConfig) -> nn.Module:
    """The codec of `config`; its compression is `presets.codec_factors(config)` (the recipe checks resolutions
    and frame counts against that)."""
    if config.codec == "pixel":
        return PixelCodec(config.pixel_patch, config.pixel_residual, config.pixel_residual_scale)
    stats = {"latents_mean": [0.0] * config.latent_channels, "latents_std": [1.0] * config.latent_channels}
    if config.vae_arch == "wan2.2":  # Wan2.2-TI2V's VAE: 4x temporal, 16x spatial (2x2 patches, then 8x)
        vae = AutoencoderKLWan(
            base_dim=config.vae_base_dim,
            decoder_base_dim=config.vae_base_dim * 8 // 5,  # 256 for Wan2.2's 160
            z_dim=config.latent_channels,
            is_residual=True,
            in_channels=12,
            out_channels=12,
            patch_size=2,
            scale_factor_spatial=16,
            **stats,
        )
    else:  # a small one frame-by-frame VAE (4x spatial) for tests and CPU experiments
        vae = AutoencoderKLWan(
            base_dim=config.vae_base_dim,
            z_dim=config.latent_channels,
            dim_mult=[1, 2, 2],
            num_res_blocks=1,
            temperal_downsample=[False, False],
            **stats,
        )
    return WanVAECodec(vae)
