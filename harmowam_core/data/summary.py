"""What `harmowam info` reports about a dataset, as plain data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harmowam_core.data import format as fmt
from harmowam_core.data.reader import DatasetReader
from harmowam_core.errors import DatasetError


def summarize(root: str | Path, mapping: fmt.DataMapping | None = None) -> dict:
    """What `harmowam info` shows, as plain data: sizes, cameras (feature key, size, codec), the mapping of the
    dataset's features onto cameras, action and state (`mapping`, a recipe's `data:` section; default every
    camera by name) and the features left unmapped, labels, stages and scenes. Raises DatasetError for a
    dataset with no episodes yet (one LeRobot began recording and never finished)."""
    reader = DatasetReader(root, mapping)
    if not reader.num_episodes:
        raise DatasetError(
            f"{reader.root}: no episodes yet (info.json counts {reader.info.get('total_episodes', 0)}); record "
            "some first, or finish the recording"
        )
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
            name: {"key": reader.camera_keys[name], "height": h, "width": w, "codec": reader.camera_codec(name)}
            for name, (h, w) in reader.spec.cameras.items()
        },
        "mapping": {
            "cameras": dict(reader.camera_keys),
            "action": {"key": reader.mapping.action, "dim": reader.spec.action_dim},
            "state": {"key": reader.mapping.state, "dim": reader.spec.state_dim},
            "action_space": "native" if reader.native_actions else "harmowam",
            "gripper": reader.mapping.gripper,
            "height": reader.mapping.height,
        },
        "unmapped": unmapped(reader),
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


def unmapped(reader: DatasetReader) -> list[str]:
    """The dataset's features that training does not read (carried in the files, unused unless mapped)."""
    used = {*reader.camera_keys.values(), reader.mapping.action, reader.mapping.state, fmt.LABEL_KEY}
    return [k for k in reader.info["features"] if k not in used and k not in fmt.DEFAULT_FEATURES]


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
