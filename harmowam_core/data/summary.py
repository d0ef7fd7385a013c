"""What `harmowam info` reports about a dataset, as plain data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harmowam_core.data import format as fmt
from harmowam_core.data.reader import DatasetReader


def summarize(root: str | Path) -> dict:
    reader = DatasetReader(root)
    meta = reader.meta
    stage_names = list(meta.get("stage_names") or [])
    results = [row.get("stage_success") or [] for row in reader.episodes]
    width = max([len(stage_names)] + [len(r) for r in results])
    stage_names += [f"S{i + 1}" for i in range(len(stage_names), width)]
    stages = []
    for i, name in enumerate(stage_names):
        scored = [r[i] for r in results if len(r) > i]
        stages.append(
            {
                "name": name,
                "episodes": len(scored),
                "success_rate": float(np.mean(scored)) if scored else None,
            }
        )
    labelled = reader.interaction >= 0
    labelled_eps = int(sum(labelled[reader.episode_slice(e)].all() for e in range(reader.num_episodes)))
    return {
        "path": str(reader.root),
        "codebase_version": reader.info["codebase_version"],
        "robot_type": reader.info.get("robot_type"),
        "task": meta.get("task"),
        "arms": reader.num_arms,
        "episodes": reader.num_episodes,
        "frames": reader.num_frames,
        "fps": reader.fps,
        "duration_s": reader.num_frames / reader.fps,
        "instructions": reader.tasks,
        "cameras": {
            name: {"height": h, "width": w, "codec": reader.spec.codec} for name, (h, w) in reader.spec.cameras.items()
        },
        "features": {k: {"dtype": v["dtype"], "shape": list(v["shape"])} for k, v in reader.info["features"].items()},
        "labels": {
            "feature": fmt.LABEL_KEY in reader.info["features"],
            "labelled_episodes": labelled_eps,
            "labelled_frames": int(labelled.sum()),
            "interaction_share": float(reader.interaction[labelled].mean()) if labelled.any() else None,
            "settings": meta.get("labels"),
        },
        "stages": stages,
        "scenes": scenes(reader.episodes),
    }


def scenes(rows: list[dict]) -> dict:
    """The scene seeds per OOD protocol ("unknown" for episodes recorded without one), as sorted lists."""
    out: dict[str, list[int]] = {}
    unknown = 0
    for row in rows:
        if row.get("seed") is None:
            unknown += 1
        else:
            out.setdefault(row.get("ood") or "none", []).append(int(row["seed"]))
    result: dict = {ood: sorted(seeds) for ood, seeds in sorted(out.items())}
    if unknown:
        result["unknown"] = unknown
    return result
