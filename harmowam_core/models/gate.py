"""The process-adaptive gate (paper section 3.4, appendix D.3): p(interaction) from the current observation.

A small MLP on the visual tokens of the current frame of every camera (SigLIP patch tokens, the ones the predictive
expert reads too): each camera's square grid of patch tokens is average-pooled to a `pool_grid` x `pool_grid` grid,
which keeps where things are in the image (a plain mean over the tokens does not; measurements:
docs/design-notes.md), and the cameras are concatenated. With `motion` (tiny) the gate also reads the pooled
tokens' change since the previous control step, and with `world_model` (tiny) the world model's hidden tokens of
this step averaged per latent frame: the imagined next frames, which foresee a grasp or release before it shows.
Trained with binary cross-entropy against the `interaction` labels of `harmowam label` (frames labelled -1 do not
count); at run time p >= the recipe's `gate.threshold` routes to the predictive expert, below it to the reactive
one.

    gate = Gate(GateModelConfig(), token_width=64, num_cameras=3, world_model=(13, 64))
    p = gate.probability(tokens, previous, wm_hidden)   # tokens (B, cameras, N, width), wm_hidden (B, 13*n, 64)
    loss = gate.loss(tokens, labels, previous, wm_hidden)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harmowam_core.models.presets import GateModelConfig


class Gate(nn.Module):
    def __init__(
        self, config: GateModelConfig, token_width: int, num_cameras: int, world_model: tuple[int, int] | None = None
    ):
        """`world_model`: (latent frames, width) of the world model's hidden tokens, the gate's extra input when
        `config.world_model` is on (None: the gate does not read them)."""
        super().__init__()
        self.config, self.token_width, self.num_cameras = config, token_width, num_cameras
        self.world_model = world_model if config.world_model else None
        width = token_width * num_cameras * config.pool_grid**2 * (2 if config.motion else 1)
        if self.world_model is not None:
            width += self.world_model[0] * self.world_model[1]
        layers: list[nn.Module] = [nn.LayerNorm(width)]
        for hidden in config.hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(config.dropout)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(
        self, tokens: torch.Tensor, previous: torch.Tensor | None = None, wm_hidden: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, cameras, N, width) visual tokens -> (B,) interaction logits. With `motion`, `previous` holds the
        tokens one control step earlier (None: no motion, as at an episode's start); a gate that reads the world
        model needs `wm_hidden`, its (B, latent frames * n, width) hidden tokens."""
        pooled = self._pool(tokens)
        if self.config.motion:
            pooled = torch.cat([pooled, pooled - (pooled if previous is None else self._pool(previous))], dim=1)
        if self.world_model is not None:
            frames, width = self.world_model
            if wm_hidden is None or wm_hidden.shape[-1] != width or wm_hidden.shape[1] % frames:
                got = None if wm_hidden is None else tuple(wm_hidden.shape)
                raise ValueError(f"expected world-model tokens (B, {frames} * n, {width}), got {got}")
            per_frame = wm_hidden.float().reshape(wm_hidden.shape[0], frames, -1, width).mean(2)
            pooled = torch.cat([pooled, per_frame.flatten(1)], dim=1)
        return self.mlp(pooled).squeeze(-1)

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] != self.num_cameras or tokens.shape[-1] != self.token_width:
            raise ValueError(
                f"expected tokens (B, {self.num_cameras}, N, {self.token_width}), got {tuple(tokens.shape)}"
            )
        b, cams, n, w = tokens.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"expected a square grid of patch tokens, got {n}")
        grid = tokens.float().reshape(b * cams, side, side, w).permute(0, 3, 1, 2)
        return F.adaptive_avg_pool2d(grid, self.config.pool_grid).reshape(b, -1)

    def probability(
        self, tokens: torch.Tensor, previous: torch.Tensor | None = None, wm_hidden: torch.Tensor | None = None
    ) -> torch.Tensor:
        return torch.sigmoid(self(tokens, previous, wm_hidden))

    def loss(
        self,
        tokens: torch.Tensor,
        labels: torch.Tensor,
        previous: torch.Tensor | None = None,
        wm_hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Binary cross-entropy over the labelled frames (label 0 transit, 1 interaction, -1 unlabelled)."""
        keep = labels >= 0
        logits = self(tokens, previous, wm_hidden)
        if not bool(keep.any()):
            return logits.sum() * 0.0  # keeps the graph (and DDP: every parameter used) on a batch with no labels
        return F.binary_cross_entropy_with_logits(logits[keep], labels[keep].float())
