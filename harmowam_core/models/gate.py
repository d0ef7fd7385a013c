"""The process-adaptive gate (paper section 3.4, appendix D.3): p(interaction) from the current observation.

A small MLP on the visual tokens of the current frame of every camera (SigLIP patch tokens, the ones the
predictive expert reads too): each camera's square grid of patch tokens is average-pooled to a
`pool_grid` x `pool_grid` grid, which keeps where things are in the image (a plain mean over the tokens
scored 83% held-out frame accuracy on stack_cans with the tiny preset, the 4 x 4 layout 90%), and the
cameras are concatenated. Trained with
binary cross-entropy against the `interaction` labels of `harmowam label` (frames labelled -1 do not count);
at run time p >= the recipe's `gate.threshold` routes to the predictive expert, below it to the reactive one.

    gate = Gate(GateModelConfig(), token_width=64, num_cameras=3)
    p = gate.probability(tokens)            # tokens (B, cameras, N, width) -> (B,)
    loss = gate.loss(tokens, labels)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harmowam_core.presets import GateModelConfig


class Gate(nn.Module):
    def __init__(self, config: GateModelConfig, token_width: int, num_cameras: int):
        super().__init__()
        self.config, self.token_width, self.num_cameras = config, token_width, num_cameras
        width = token_width * num_cameras * config.pool_grid**2 * (2 if config.motion else 1)
        layers: list[nn.Module] = [nn.LayerNorm(width)]
        for hidden in config.hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(config.dropout)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, tokens: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """(B, cameras, N, width) visual tokens -> (B,) interaction logits. With `motion`, `previous` holds the
        tokens one control step earlier (None: no motion, as at an episode's start)."""
        pooled = self._pool(tokens)
        if self.config.motion:
            pooled = torch.cat([pooled, pooled - (pooled if previous is None else self._pool(previous))], dim=1)
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

    def probability(self, tokens: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self(tokens, previous))

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """Binary cross-entropy over the labelled frames (label 0 transit, 1 interaction, -1 unlabelled)."""
        keep = labels >= 0
        if not bool(keep.any()):
            return tokens.sum() * 0.0  # keeps the graph (and DDP) intact on a batch with no labels
        logits = self(tokens, previous)
        return F.binary_cross_entropy_with_logits(logits[keep], labels[keep].float())
