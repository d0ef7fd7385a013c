"""Per-feature statistics (min, max, mean, std, count) per episode, and their exact aggregation.

Vectors are reduced over frames, giving one value per dimension; images over frames and pixels, giving one
value per channel with LeRobot's (3, 1, 1) shape, in [0, 1].
"""

from __future__ import annotations

import numpy as np

STAT_NAMES = ("min", "max", "mean", "std", "count")


def vector_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """x: (T, D) or (T,) -> stats with shape (D,) or (1,)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    return {
        "min": x.min(0),
        "max": x.max(0),
        "mean": x.mean(0),
        "std": x.std(0),
        "count": np.array([x.shape[0]], dtype=np.int64),
    }


class ImageStatsAccumulator:
    """Running per-channel moments of uint8 RGB frames, so frames never need to be kept in memory."""

    def __init__(self) -> None:
        self.n = 0
        self.pixels = 0
        self.sum = np.zeros(3)
        self.sumsq = np.zeros(3)
        self.min = np.full(3, np.inf)
        self.max = np.full(3, -np.inf)

    def add(self, rgb: np.ndarray) -> None:  # (H, W, 3) uint8
        flat = rgb.reshape(-1, 3).astype(np.float64) / 255.0
        self.n += 1
        self.pixels += flat.shape[0]
        self.sum += flat.sum(0)
        self.sumsq += (flat**2).sum(0)
        self.min = np.minimum(self.min, flat.min(0))
        self.max = np.maximum(self.max, flat.max(0))

    def result(self) -> dict[str, np.ndarray]:
        mean = self.sum / self.pixels
        var = np.maximum(self.sumsq / self.pixels - mean**2, 0.0)
        shape = (3, 1, 1)
        return {
            "min": self.min.reshape(shape),
            "max": self.max.reshape(shape),
            "mean": mean.reshape(shape),
            "std": np.sqrt(var).reshape(shape),
            "count": np.array([self.n], dtype=np.int64),
        }


def aggregate(per_episode: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Combine per-episode stats of one feature as if computed over all frames at once."""
    counts = np.array([float(s["count"][0]) for s in per_episode])
    total = counts.sum()
    w = counts / total
    means = np.stack([np.asarray(s["mean"], dtype=np.float64) for s in per_episode])
    stds = np.stack([np.asarray(s["std"], dtype=np.float64) for s in per_episode])
    shape = (-1,) + (1,) * (means.ndim - 1)
    mean = (w.reshape(shape) * means).sum(0)
    var = (w.reshape(shape) * (stds**2 + (means - mean) ** 2)).sum(0)
    return {
        "min": np.min(np.stack([s["min"] for s in per_episode]), 0),
        "max": np.max(np.stack([s["max"] for s in per_episode]), 0),
        "mean": mean,
        "std": np.sqrt(np.maximum(var, 0.0)),
        "count": np.array([int(total)], dtype=np.int64),
    }
