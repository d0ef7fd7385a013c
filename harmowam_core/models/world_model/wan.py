"""The Wan-architecture video world model (paper sections 3.3 and 3.5), implementing `WorldModelInterface`.

Given the current front/global camera frame and the instruction, the world model imagines the next 12 frames
(13 with the current one, the action-chunk horizon) by flow matching: diffusers' `WanTransformer3DModel`
denoises video latents, conditioned on the instruction's text tokens through cross-attention and on the
current frame, whose latent stays clean with timestep 0 (Wan2.2 TI2V's image conditioning). Sampling uses
`FlowMatchEulerDiscreteScheduler`, 5 steps by default. Besides the frames it returns what the experts need:
each predicted frame's clean latent and the hidden tokens of one transformer block at the last step.

    wm = WorldModel.from_config(config)                       # tiny: random init, trainable on a CPU
    wm = WorldModel.from_pretrained("path/to/Wan2.2-TI2V-5B-Diffusers", config)   # paper: local checkpoint
    out = wm.predict(current_frames, ["stack the cans"])      # out.frames (B, 13, 3, H, W) in [0, 1]
    loss = wm.training_loss(video, instructions, video_is_pad)

Two codecs map frames to latents: `wan` is `AutoencoderKLWan` (the paper's VAE, 4x temporal and 16x spatial
compression in Wan2.2), `pixel` is a parameter-free space-to-depth of the pixels (exact, nothing to train)
that the tiny preset uses, with future frames as differences from the current one. The paper preset's
transformer predicts the velocity (as Wan2.2 does); the tiny one predicts the clean latents x0, from which the
velocity follows (a 64-wide token cannot carry a 192-dimensional noise patch through, a clean future it can).

The tiny preset adds three things the paper's pretrained 5B model does not need (measurements on stack_cans:
docs/design-notes.md):
- `condition: concat` puts the current frame's latent on the channels of every frame (Wan2.1 I2V's image
  conditioning), so each token sees what is at its place.
- `context_frames: 2` concatenates the previous frame too: from one 64 px frame a pausing arm and a moving
  one look alike.
- EDM preconditioning (`sigma_data`, x0 = c_skip x_t + c_out F) and a sigmoid `output_gate` per latent pixel
  keep still regions still instead of the network's lossy copy of its input.
Text comes from UMT5 (paper) or a small T5 encoder over a byte-level tokenizer
(tiny); the text encoder is frozen and each instruction's embedding is cached.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
from torch import nn

from harmowam_core.errors import HarmoWAMError, first_line
from harmowam_core.models.encoders import WithFrozenParts, embed_text
from harmowam_core.models.encoders import resolve as resolve_checkpoint
from harmowam_core.models.encoders import text_encoder as build_text_encoder
from harmowam_core.models.presets import ROPE_MAX_SEQ_LEN, WorldModelConfig
from harmowam_core.models.world_model import WorldModelOutput
from harmowam_core.models.world_model.codecs import (
    PixelCodec,
    WanVAECodec,
    build_codec,
    frame_to_latent,
    latent_frames,
)

CONFIG_NAME = "harmowam_world_model.json"
TRAIN_TIMESTEPS = 1000
SIGMA_FLOOR = 0.05  # the x0-prediction loss weights 1 / sigma^2, bounded near the clean end


# ------------------------------------------------------------------------------------------------ text
def _tiny_text_encoder(config: WorldModelConfig):
    # Frozen and never trained, so it is part of what a tiny model *is*: built from a fixed seed, every tiny
    # model (a checkpoint's, a fresh one to resume into, an FSDP gather target) embeds text identically.
    return build_text_encoder(None, tiny_width=config.text_dim)


def _load_text_encoder(path: Path, kind: str):
    if kind == "umt5":
        from transformers import AutoTokenizer, UMT5EncoderModel

        encoder = UMT5EncoderModel.from_pretrained(path / "text_encoder", use_safetensors=True)
        return encoder, AutoTokenizer.from_pretrained(path / "tokenizer")
    from transformers import ByT5Tokenizer, T5EncoderModel

    encoder = T5EncoderModel.from_pretrained(path / "text_encoder", use_safetensors=True)
    return encoder, ByT5Tokenizer.from_pretrained(path / "tokenizer")


# ------------------------------------------------------------------------------------------------ model
def build_transformer(config: WorldModelConfig, channels: int) -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=tuple(config.patch_size),
        num_attention_heads=config.num_attention_heads,
        attention_head_dim=config.attention_head_dim,
        in_channels=channels * (1 + (config.context_frames if config.condition == "concat" else 0)),
        out_channels=channels + (1 if config.output_gate and config.prediction == "sample" else 0),
        text_dim=config.text_dim,
        freq_dim=config.freq_dim,
        ffn_dim=config.ffn_dim,
        num_layers=config.num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=ROPE_MAX_SEQ_LEN,
    )


class WorldModel(WithFrozenParts):
    def __init__(self, config: WorldModelConfig, transformer, codec, text_encoder, tokenizer):
        super().__init__()
        self.config = config
        self.transformer, self.tokenizer = transformer, tokenizer
        # The frozen parts are held outside the module tree: checkpoints, DDP/FSDP wrapping and optimisers see
        # the transformer only (UMT5-XXL alone is 5.7B parameters); `.to()` still moves them (WithFrozenParts).
        self._frozen = {"codec": codec.requires_grad_(False).eval(), "text_encoder": text_encoder}
        text_encoder.requires_grad_(False).eval()
        self.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=TRAIN_TIMESTEPS, shift=config.shift)
        self._text_cache: dict[str, torch.Tensor] = {}
        self._captured: torch.Tensor | None = None
        block = self.transformer.blocks[config.feature_block]
        block.register_forward_hook(self._capture)

    # --------------------------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config: WorldModelConfig) -> WorldModel:
        """A randomly initialised model of this configuration (the tiny preset trains from here)."""
        codec = build_codec(config)
        if config.text_encoder == "umt5":
            raise HarmoWAMError("the umt5 text encoder comes from a checkpoint: set world_model.pretrained")
        text_encoder, tokenizer = _tiny_text_encoder(config)
        return cls(config, build_transformer(config, codec.channels), codec, text_encoder, tokenizer)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, config: WorldModelConfig | None = None, torch_dtype: torch.dtype | None = None
    ) -> WorldModel:
        """Load a saved world model, or a Wan2.2 checkpoint in the diffusers layout (transformer, vae,
        text_encoder, tokenizer), from a local directory. Nothing is downloaded."""
        path = resolve_checkpoint(path)
        saved = path / CONFIG_NAME
        if saved.exists():
            config = WorldModelConfig(**json.loads(saved.read_text()))
        elif config is None:
            raise HarmoWAMError(
                f"{path}: no {CONFIG_NAME}: not a world model HarmoWAM saved (a train-wm run keeps its model in "
                "model/); a Wan checkpoint loads from the recipe's model.overrides.world_model.pretrained"
            )
        kw = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}  # weights: safetensors only, below
        try:
            transformer = WanTransformer3DModel.from_pretrained(path / "transformer", use_safetensors=True, **kw)
            if config.codec == "pixel":
                codec = PixelCodec(config.pixel_patch, config.pixel_residual, config.pixel_residual_scale)
            else:
                vae = AutoencoderKLWan.from_pretrained(path / "vae", torch_dtype=torch.float32, use_safetensors=True)
                codec = WanVAECodec(vae)
            text_encoder, tokenizer = _load_text_encoder(path, config.text_encoder)
        except (OSError, ValueError) as e:
            raise HarmoWAMError(f"{path}: cannot load the world model: {first_line(e)}") from None
        return cls(config, transformer, codec, text_encoder, tokenizer)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(path / "transformer")
        if isinstance(self.codec, WanVAECodec):
            self.codec.vae.save_pretrained(path / "vae")
        self.text_encoder.save_pretrained(path / "text_encoder")
        self.tokenizer.save_pretrained(path / "tokenizer")
        (path / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2))

    # --------------------------------------------------------------------------------- pieces
    @property
    def codec(self) -> nn.Module:
        return self._frozen["codec"]

    @property
    def text_encoder(self) -> nn.Module:
        return self._frozen["text_encoder"]

    def forward(self, video, instructions, video_is_pad=None, generator=None, previous=None) -> torch.Tensor:
        """The training loss: a DDP/FSDP wrapper syncs gradients only through `forward`."""
        return self.training_loss(video, instructions, video_is_pad, generator, previous)

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def hidden_size(self) -> int:
        return self.config.num_attention_heads * self.config.attention_head_dim

    def _capture(self, module, args, output):
        self._captured = output

    def encode_text(self, instructions: list[str]) -> torch.Tensor:
        """(B, L, text_dim) token embeddings; each distinct instruction is encoded once and cached."""
        return embed_text(
            self.text_encoder, self.tokenizer, self._text_cache, instructions, self.config.max_text_tokens, self.device
        )

    def to_model_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] frames (..., 3, H, W) -> the model's resolution in [-1, 1]."""
        x = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:])
        if list(x.shape[-2:]) != list(self.config.resolution):
            x = F.interpolate(x, size=tuple(self.config.resolution), mode="area")
        return (x * 2.0 - 1.0).reshape(*lead, 3, *self.config.resolution).to(self.device)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) frames -> (B, C, T', h, w) latents."""
        with torch.no_grad():
            return self.codec.encode(self.to_model_frames(frames).transpose(1, 2))

    def _timesteps(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-token timesteps (B, tokens): 0 on the clean first latent frame, `t` (B,) elsewhere."""
        b, _, f, h, w = latents.shape
        _, ph, pw = self.config.patch_size
        per_frame = (h // ph) * (w // pw)
        ts = t.view(b, 1).expand(b, f * per_frame).clone()
        ts[:, :per_frame] = 0.0
        return ts

    def encode_context(self, current: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor | None:
        """The previous frame's latent (B, C, 1, h, w) for `context_frames: 2` (with the residual pixel codec, its
        difference from the current frame), None otherwise. No previous frame (an episode's first step) means
        the current one again: a still scene."""
        if self.config.context_frames < 2:
            return None
        previous = current if previous is None else previous
        if isinstance(self.codec, PixelCodec):
            return self.encode_video(torch.stack([current, previous], dim=1))[:, :, 1:]
        return self.encode_video(previous.unsqueeze(1))

    def denoise(
        self, latents: torch.Tensor, t: torch.Tensor, text: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The transformer's output at noise level t / 1000: the velocity, or the clean latents x0 with
        `prediction: sample`. With `condition: concat` every latent frame also carries the current one's channels
        (and the previous frame's, `context`, with `context_frames: 2`)."""
        x = latents
        if self.config.condition == "concat":
            extra = [latents[:, :, :1]] + ([context.to(latents.dtype)] if self.config.context_frames > 1 else [])
            x = torch.cat([latents, *(e.expand_as(latents) for e in extra)], dim=1)
        timestep = self._timesteps(latents, t)
        out = self.transformer(x, timestep=timestep, encoder_hidden_states=text, return_dict=False)[0]
        if out.shape[1] > latents.shape[1]:  # the output gate
            out = out[:, :-1] * torch.sigmoid(out[:, -1:])
        if self.config.prediction == "sample" and self.config.sigma_data > 0:
            c_skip, c_out = self._preconditioning(t, latents.ndim)
            out = (c_skip * latents.float() + c_out * out.float()).to(out.dtype)
        return out

    def _preconditioning(self, t: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """EDM's c_skip and c_out for x_t = (1 - sigma) x0 + sigma eps, shaped to broadcast over latents."""
        sigma = (t.float() / TRAIN_TIMESTEPS).view(-1, *[1] * (ndim - 1))
        sd2 = self.config.sigma_data**2
        denom = (1 - sigma) ** 2 * sd2 + sigma**2
        return sd2 * (1 - sigma) / denom, sigma * self.config.sigma_data / denom.sqrt()

    def velocity(
        self, latents: torch.Tensor, t: torch.Tensor, text: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The flow's velocity at noise level t / 1000 (> 0). With `prediction: sample` it is (x_t - x0) / sigma,
        so an Euler step to sigma' is exactly x0 + sigma' / sigma (x_t - x0)."""
        out = self.denoise(latents, t, text, context)
        if self.config.prediction == "sample":
            sigma = (t.float() / TRAIN_TIMESTEPS).clamp(min=1e-4).view(-1, 1, 1, 1, 1)
            return ((latents.float() - out.float()) / sigma).to(out.dtype)
        return out

    # --------------------------------------------------------------------------------- training
    def training_loss(
        self,
        video: torch.Tensor,
        instructions: list[str],
        video_is_pad: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        previous: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Conditional flow matching (paper eq. 2): x_t = (1 - t) x0 + t eps, target velocity eps - x0, t drawn
        from a shifted logit-normal (SD3's timestep sampling); with `prediction: sample` the velocity error is
        computed from the predicted x0. The current frame stays clean and padded frames past an episode's end
        do not count."""
        x0 = self.encode_video(video)
        b, _, f = x0.shape[:3]
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        u = torch.randn(b, generator=generator, device=x0.device, dtype=x0.dtype)
        sigma = torch.sigmoid(u)
        sigma = self.config.shift * sigma / (1 + (self.config.shift - 1) * sigma)  # the sampler's shift
        s = sigma.view(b, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        xt[:, :, :1] = x0[:, :, :1]
        context = self.encode_context(video[:, 0], previous)
        out = self.denoise(xt, sigma * TRAIN_TIMESTEPS, self.encode_text(instructions), context).float()
        if self.config.prediction == "sample":
            # the velocity error of the predicted x0: |x0_hat - x0|^2 / sigma^2, 1 / sigma bounded near sigma 0
            if self.config.sigma_data > 0:  # unit weight on the network's own (preconditioned) target
                weight = 1.0 / self._preconditioning(sigma * TRAIN_TIMESTEPS, 5)[1].clamp(min=1e-3) ** 2
            else:
                weight = 1.0 / s.float().clamp(min=SIGMA_FLOOR) ** 2
            err = (weight * (out - x0.float()) ** 2).mean(dim=(1, 3, 4))  # (B, F)
        else:
            err = ((out - (noise - x0).float()) ** 2).mean(dim=(1, 3, 4))
        keep = torch.ones(b, f, device=x0.device)
        keep[:, 0] = 0.0
        if video_is_pad is not None:
            temporal = self.codec.temporal
            first_frame = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.arange(f - 1) * temporal])
            pad = video_is_pad.to(x0.device)[:, first_frame.clamp(max=video_is_pad.shape[1] - 1)]
            keep = keep * (~pad).float()
        return (err * keep).sum() / keep.sum().clamp(min=1.0)

    # --------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def predict(
        self,
        current: torch.Tensor,
        instructions: list[str],
        steps: int | None = None,
        generator: torch.Generator | None = None,
        previous: torch.Tensor | None = None,
    ) -> WorldModelOutput:
        """Imagine `num_frames` frames from the current ones (B, 3, H, W) with `steps` Euler steps; `previous`
        (B, 3, H, W), the frames one control step earlier, matters with `context_frames: 2` (None: a still scene)."""
        steps = self.config.denoising_steps if steps is None else steps
        cond = self.encode_video(current.unsqueeze(1))  # (B, C, 1, h, w)
        b, c, _, h, w = cond.shape
        f = latent_frames(self.config.num_frames, self.codec.temporal)
        dtype = next(self.transformer.parameters()).dtype
        latents = torch.randn((b, c, f, h, w), generator=generator, device=cond.device, dtype=torch.float32)
        latents[:, :, :1] = cond
        text = self.encode_text(instructions).to(dtype)
        context = self.encode_context(current, previous)
        shift = self.config.sample_shift if self.config.sample_shift is not None else self.config.shift
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config, shift=shift)
        scheduler.set_timesteps(steps, device=cond.device)
        for t in scheduler.timesteps:
            v = self.velocity(latents.to(dtype), t.expand(b).to(dtype), text, context)
            latents = scheduler.step(v.float(), t, latents).prev_sample
            latents[:, :, :1] = cond
        hidden = self._captured
        video = self.codec.decode(latents).transpose(1, 2)  # (B, T, 3, H, W) in [-1, 1]
        frames = ((video[:, : self.config.num_frames] + 1.0) / 2.0).clamp(0.0, 1.0)
        per_frame = self.codec.absolute(latents)[
            :, :, frame_to_latent(self.config.num_frames, self.codec.temporal)
        ].transpose(1, 2)
        return WorldModelOutput(frames=frames.float(), latents=per_frame, hidden=hidden.float())


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
