"""Read back what accelerate's tensorboard tracker wrote (tests of `--log-with tensorboard`)."""

from __future__ import annotations

from pathlib import Path


def scalars(logs: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tensorboard event under `logs`: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for run in sorted({p.parent for p in Path(logs).rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(run))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(tag))
    return found
