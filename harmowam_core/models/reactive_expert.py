"""The reactive expert (paper section 3.3, appendix C.2): inverse dynamics on the world model's imagined future.

For each future timestep k the expert reads the predicted frame k+1 and the world model's hidden tokens of the
latent frame that holds it: DINOv2 patch tokens of the frame, concatenated on the token axis with the world
model tokens average-pooled along channels to the DINOv2 width (3072 -> 768 in the paper preset). A
multi-scale convolutional orientation decoder (1-D convolutions over the fused tokens with several kernel
sizes, concatenated, pooled) maps them to the action a_k. Trained with a Smooth L1 loss against the
demonstrated actions; DINOv2 stays frozen.

    expert = ReactiveExpert(ReactiveExpertConfig(), action_dim=7, wm_width=64)
    actions = expert(frames, wm_tokens)   # frames (B, K, 3, H, W), wm_tokens (B, K, n, wm_width) -> (B, K, 7)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harmowam_core.models import encoders
from harmowam_core.models.presets import ReactiveExpertConfig


def pool_channels(tokens: torch.Tensor, width: int) -> torch.Tensor:
    """Average-pool the last (channel) axis to `width`: (..., D) -> (..., width); D a multiple of width."""
    d = tokens.shape[-1]
    if d % width:
        raise ValueError(f"world-model width {d} is not a multiple of the DINOv2 width {width}")
    return tokens.unflatten(-1, (width, d // width)).mean(-1)


class OrientationDecoder(nn.Module):
    """Multi-scale 1-D convolutions over a token sequence, pooled to one vector, projected to the action."""

    def __init__(self, width: int, channels: int, kernel_sizes: list[int], action_dim: int, extra: int = 0):
        """`extra`: the width of a vector joined to the pooled features before the head (the convolutional
        encoder's spatial-softmax keypoints; 0: none)."""
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv1d(width, channels, k, padding=k // 2) for k in kernel_sizes)
        merged = channels * len(kernel_sizes) + extra
        self.head = nn.Sequential(
            nn.LayerNorm(merged), nn.Linear(merged, merged), nn.GELU(), nn.Linear(merged, action_dim)
        )

    def forward(self, tokens: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """(N, L, width) tokens (and (N, extra) features) -> (N, action_dim)."""
        x = tokens.transpose(1, 2)
        features = torch.cat([F.gelu(branch(x)) for branch in self.branches], dim=1).mean(dim=2)
        if extra is not None:
            features = torch.cat([features, extra], dim=1)
        return self.head(features)


class ReactiveExpert(encoders.WithFrozenParts):
    def __init__(self, config: ReactiveExpertConfig, action_dim: int, wm_width: int):
        super().__init__()
        self.config, self.action_dim, self.wm_width = config, action_dim, wm_width
        self._frozen: dict[str, nn.Module] = {}
        self.frame_net: encoders.ConvEncoder | None = None
        if config.frame_backbone == "conv":  # trained with the decoder (tiny)
            self.frame_net = encoders.ConvEncoder(config.image_size, width=config.dino_width)
            self.width = config.dino_width
        else:  # frozen, and outside the module tree: checkpoints and optimisers see the decoder only
            self._frozen["dino"] = encoders.frame_encoder(config.dino, config.image_size)
            self.width = encoders.width(self.dino)
            if self.width != config.dino_width:
                raise ValueError(
                    f"reactive_expert.dino_width is {config.dino_width} but the DINOv2 model is {self.width}"
                )
        keypoints = 2 * self.width if self.frame_net is not None else 0
        self.decoder = OrientationDecoder(
            self.width, config.decoder_channels, config.decoder_kernel_sizes, action_dim, extra=keypoints
        )

    @property
    def dino(self) -> nn.Module | None:
        """The frozen DINOv2 (None with the trained convolutional encoder)."""
        return self._frozen.get("dino")

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    def frame_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 or [0, 1] frames -> (N, patches, width) patch tokens: of the trained convolutional
        encoder, or of the frozen DINOv2 (no CLS, no grad)."""
        return self._encode(frames)[0]

    def _encode(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Patch tokens and, with the convolutional encoder, its keypoints flattened (N, 2 * width)."""
        pixels = encoders.pixels(frames, self.config.image_size, encoders.IMAGENET_MEAN, encoders.IMAGENET_STD)
        if self.frame_net is not None:
            tokens, keypoints = self.frame_net.tokens_and_keypoints(pixels.to(self.device))
            return tokens, keypoints.flatten(1)
        with torch.no_grad():
            out = self.dino(pixel_values=pixels.to(self.device)).last_hidden_state
        return out[:, 1:], None

    def forward(
        self, frames: torch.Tensor, wm_tokens: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """frames (B, K, 3, H, W) predicted future frames, wm_tokens (B, K, n, wm_width) or None (the latent
        ablation) -> (B, K, action_dim), action k read from frame k. In training the frames are shifted at
        random (`augment_shift`, drawn from `generator`)."""
        b, k = frames.shape[:2]
        pad = self.config.augment_shift
        if self.training and pad > 0:  # random shifts in training, the same for all K frames of a window
            frames = encoders.random_shift(encoders.unit_float(frames).flatten(1, 2), pad, generator)
            frames = frames.unflatten(1, (k, 3))
        tokens, keypoints = self._encode(frames.reshape(b * k, *frames.shape[2:]))
        if wm_tokens is not None:
            latent = pool_channels(wm_tokens.reshape(b * k, *wm_tokens.shape[2:]).float(), self.width)
            tokens = torch.cat([tokens, latent.to(tokens)], dim=1)
        return self.decoder(tokens, keypoints).reshape(b, k, self.action_dim)

    def loss(
        self,
        frames: torch.Tensor,
        wm_tokens: torch.Tensor | None,
        actions: torch.Tensor,
        action_is_pad: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Smooth L1 against the demonstrated actions (B, K, A); padded steps past an episode's end do not count."""
        err = F.smooth_l1_loss(
            self(frames, wm_tokens, generator), actions.float(), beta=self.config.smooth_l1_beta, reduction="none"
        )
        keep = torch.ones_like(err[..., 0]) if action_is_pad is None else (~action_is_pad).float()
        return (err.mean(-1) * keep).sum() / keep.sum().clamp(min=1.0)
