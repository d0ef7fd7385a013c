"""Seeds: their valid range, and scene seeds as summaries print them."""

from __future__ import annotations

from harmowam_core.errors import ParameterError

MAX_SEED = 2**32 - 1  # numpy's legacy seeding (accelerate's set_seed) takes seeds in 0..2**32-1


def check_seeds(seed: int, count: int = 1, parameter: str = "seed") -> int:
    """`seed` when it and the `count` seeds from it (seed .. seed + count - 1) are all valid seeds
    (0..MAX_SEED); else ParameterError naming `parameter`. A negative seed is refused, never wrapped."""
    if seed < 0:
        raise ParameterError(parameter, f"must be at least 0, got {seed}")
    if seed + max(count, 1) - 1 > MAX_SEED:
        last = seed + max(count, 1) - 1
        raise ParameterError(parameter, f"seeds go up to {MAX_SEED}, and the {count} seeds from {seed} reach {last}")
    return seed


def seed_ranges(seeds: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2, 5, 7-8" (scene seeds, for summaries)."""
    parts, ordered = [], sorted(seeds)
    first = prev = ordered[0]
    for s in [*ordered[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        parts.append(str(first) if first == prev else f"{first}-{prev}")
        if s is not None:
            first = prev = s
    return ", ".join(parts)
