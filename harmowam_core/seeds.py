"""Scene seeds as summaries print them."""

from __future__ import annotations


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
