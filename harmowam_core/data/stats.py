"""Per-feature statistics (min, max, mean, std, count and the quantiles q01, q10, q50, q90, q99) per episode,
and their aggregation, in the shapes and names LeRobot 0.4 writes (`lerobot.datasets.compute_stats`).

Vectors are reduced over frames, giving one value per dimension; images over frames and pixels, giving one
value per channel with LeRobot's (3, 1, 1) shape, in [0, 1]. Per episode, the quantiles are exact: numpy's
linear interpolation for vectors, the inverted CDF of a 256-level histogram per channel for uint8 images.
Across episodes, min/max/mean/std are exact and a quantile is the frame-weighted mean of the episodes'
quantiles, as LeRobot aggregates them (an approximation LeRobot's quantile normalisation is built on).

These are the raw statistics LeRobot writes (`std` unfloored, 0 for a constant dimension); what the experts
standardise with floors the scale at the range / 10 (`models.experts.robust_scale`), so a near-constant
dimension does not standardise to tens of standard deviations.
"""

from __future__ import annotations

import numpy as np

from harmowam_core.data.format import QUANTILES

QUANTILE_NAMES = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)  # q01, q10, q50, q90, q99
STAT_NAMES = ("min", "max", "mean", "std", "count", *QUANTILE_NAMES)


def vector_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """x: (T, D) or (T,) -> stats with shape (D,) or (1,); count (1,) int64 = T."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    quantiles = np.quantile(x, QUANTILES, axis=0)  # (5, D)
    return {
        "min": x.min(0),
        "max": x.max(0),
        "mean": x.mean(0),
        "std": x.std(0),
        "count": np.array([x.shape[0]], dtype=np.int64),
        **{name: quantiles[i] for i, name in enumerate(QUANTILE_NAMES)},
    }


class ImageStatsAccumulator:
    """Running per-channel moments and level histograms of uint8 RGB frames, so frames never need to be kept in
    memory."""

    def __init__(self) -> None:
        self.n = 0
        self.pixels = 0
        self.sum = np.zeros(3)
        self.sumsq = np.zeros(3)
        self.min = np.full(3, np.inf)
        self.max = np.full(3, -np.inf)
        self.hist = np.zeros((3, 256), dtype=np.int64)

    def add(self, rgb: np.ndarray) -> None:  # (H, W, 3) uint8
        levels = rgb.reshape(-1, 3)
        flat = levels.astype(np.float64) / 255.0
        self.n += 1
        self.pixels += flat.shape[0]
        self.sum += flat.sum(0)
        self.sumsq += (flat**2).sum(0)
        self.min = np.minimum(self.min, flat.min(0))
        self.max = np.maximum(self.max, flat.max(0))
        for c in range(3):
            self.hist[c] += np.bincount(levels[:, c], minlength=256)

    def result(self) -> dict[str, np.ndarray]:
        mean = self.sum / self.pixels
        var = np.maximum(self.sumsq / self.pixels - mean**2, 0.0)
        shape = (3, 1, 1)
        cdf = np.cumsum(self.hist, axis=1)  # (3, 256)
        out = {
            "min": self.min.reshape(shape),
            "max": self.max.reshape(shape),
            "mean": mean.reshape(shape),
            "std": np.sqrt(var).reshape(shape),
            "count": np.array([self.n], dtype=np.int64),
        }
        for q, name in zip(QUANTILES, QUANTILE_NAMES, strict=True):
            level = np.array([np.searchsorted(cdf[c], q * cdf[c, -1]) for c in range(3)], dtype=np.float64)
            out[name] = (level / 255.0).reshape(shape)
        return out


def aggregate(per_episode: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Combine per-episode stats of one feature: min/max/mean/std/count as if computed over all frames at once,
    each quantile as the count-weighted mean of the episodes' (left out where an episode has none: stats of
    datasets written before quantiles were)."""
    counts = np.array([float(s["count"][0]) for s in per_episode])
    total = counts.sum()
    w = counts / total
    means = np.stack([np.asarray(s["mean"], dtype=np.float64) for s in per_episode])
    stds = np.stack([np.asarray(s["std"], dtype=np.float64) for s in per_episode])
    shape = (-1,) + (1,) * (means.ndim - 1)
    mean = (w.reshape(shape) * means).sum(0)
    var = (w.reshape(shape) * (stds**2 + (means - mean) ** 2)).sum(0)
    out = {
        "min": np.min(np.stack([s["min"] for s in per_episode]), 0),
        "max": np.max(np.stack([s["max"] for s in per_episode]), 0),
        "mean": mean,
        "std": np.sqrt(np.maximum(var, 0.0)),
        "count": np.array([int(total)], dtype=np.int64),
    }
    for name in QUANTILE_NAMES:
        if all(s.get(name) is not None for s in per_episode):
            values = np.stack([np.asarray(s[name], dtype=np.float64) for s in per_episode])
            out[name] = (w.reshape(shape) * values).sum(0)
    return out
