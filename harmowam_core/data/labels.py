"""Transit / interaction labels for the gate (paper section 3.4 and appendix D.3).

Key events come from proprioceptive signals: a gripper transition between two consecutive frames
(open -> close to grasp, close -> open to release) and, for tasks whose interaction is vertical (placing,
pouring, insertion), the end-effector height crossing a per-task threshold. Frames within +-window of a key
event are interaction (1), all others transit (0). In dual-arm tasks either arm's event counts. A transit run
of at most `window` frames between two interaction runs is interaction too: too short to approach anything, it
is the middle of one manipulation whose events lie further apart than two windows (on stack_cans with window
8, the gripper low over the stack between the height crossing and the release).

The keyframe is the first frame showing the new state: for a gripper signal [0, 0, 1, 1] it is frame 2.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harmowam_core.data import format as fmt
from harmowam_core.data.stats import vector_stats
from harmowam_core.data.writer import (
    DatasetLock,
    atomic_write_json,
    atomic_write_table,
    read_episode_rows,
    read_tasks,
    recover,
    stats_to_json,
    write_meta,
)
from harmowam_core.errors import DatasetError, HarmoWAMError

LABEL_FEATURE = {"dtype": "int64", "shape": [1], "names": None}


@dataclass
class LabelSettings:
    window: int = 20
    height_thresholds: tuple[float, ...] = ()
    gripper_closed_above: float = 0.5

    def __post_init__(self) -> None:
        if self.window < 0:
            raise HarmoWAMError(f"--window must be >= 0, got {self.window}")


def _transitions(flags: np.ndarray) -> np.ndarray:
    return np.nonzero(flags[1:] != flags[:-1])[0] + 1


def find_keyframes(actions: np.ndarray, states: np.ndarray, num_arms: int, settings: LabelSettings) -> np.ndarray:
    """Sorted unique keyframe indices. actions, states: (T, 7 * num_arms)."""
    keys: list[np.ndarray] = []
    for arm in range(num_arms):
        base = 7 * arm
        closed = actions[:, base + fmt.GRIPPER_INDEX] > settings.gripper_closed_above
        keys.append(_transitions(closed))
        z = states[:, base + fmt.HEIGHT_INDEX]
        for thr in settings.height_thresholds:
            keys.append(_transitions(z < thr))
    return np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)


def interaction_labels(length: int, keyframes: np.ndarray, window: int) -> np.ndarray:
    """(length,) int64: 1 within +-window of any keyframe or in a gap of at most `window` frames between two
    such windows, else 0."""
    labels = np.zeros(length, dtype=np.int64)
    for k in keyframes:
        labels[max(0, int(k) - window) : min(length, int(k) + window + 1)] = 1
    edges = np.flatnonzero(np.diff(np.concatenate([[0], labels, [0]])))  # run starts and ends, alternating
    for end, start in zip(edges[1:-1:2], edges[2::2], strict=True):  # each transit gap between two interaction runs
        if start - end <= window:
            labels[end:start] = 1
    return labels


@dataclass
class EpisodeLabels:
    episode_index: int
    frames: int
    keyframes: list[int]
    labels: np.ndarray

    @property
    def interaction_share(self) -> float:
        return float(self.labels.mean()) if self.frames else 0.0


def label_dataset(
    root: str | Path,
    settings: LabelSettings,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[EpisodeLabels]:
    """Compute labels for every episode and, unless `dry_run`, write them into the dataset.

    Writes the `interaction` column into each data file, the feature into info.json, the keyframe indices
    and per-episode label stats into the episodes table, and the settings into meta/harmowam.json.
    Re-running replaces earlier labels. `progress(done, total)` is called after each episode.
    """
    root = Path(root)
    if not (root / fmt.INFO_PATH).is_file():
        raise DatasetError(
            f"{root}: not a dataset (no meta/info.json); pass the directory of a HarmoWAM/LeRobot v3.0 dataset"
        )
    with DatasetLock(root):
        recover(root)
        info = json.loads((root / fmt.INFO_PATH).read_text())
        spec = fmt.DatasetSpec.from_info(info)
        rows = read_episode_rows(root)
        if not rows:
            raise DatasetError(f"{root}: the dataset has no episodes to label")
        results: list[EpisodeLabels] = []
        tables: list[tuple[Path, pa.Table]] = []
        for row in rows:
            path = fmt.data_file(root, row)
            table = pq.read_table(path)
            n = table.num_rows
            actions = fmt.vector_column(table, "action")
            states = fmt.vector_column(table, "observation.state")
            keys = find_keyframes(actions, states, spec.num_arms, settings)
            labels = interaction_labels(n, keys, settings.window)
            results.append(EpisodeLabels(row["episode_index"], n, keys.tolist(), labels))
            if fmt.LABEL_KEY in table.column_names:
                table = table.drop_columns([fmt.LABEL_KEY])
            tables.append((path, table.append_column(fmt.LABEL_KEY, pa.array(labels))))
            if progress:
                progress(len(results), len(rows))
        if dry_run:
            return results
        for path, table in tables:
            atomic_write_table(path, table)
        for row, res in zip(rows, results, strict=True):
            row["keyframes"] = res.keyframes
            for s, v in stats_to_json(vector_stats(res.labels)).items():
                row[f"stats/{fmt.LABEL_KEY}/{s}"] = v
        extra = {k: v for k, v in info["features"].items() if k not in spec.features()}
        extra[fmt.LABEL_KEY] = dict(LABEL_FEATURE)
        meta_path = root / fmt.HARMOWAM_META_PATH
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"format": 1, "arms": spec.num_arms}
        meta["labels"] = {
            "window": settings.window,
            "height_thresholds": list(settings.height_thresholds),
            "gripper_closed_above": settings.gripper_closed_above,
            "episodes": len(rows),
        }
        atomic_write_json(meta_path, meta)
        write_meta(root, spec, rows, read_tasks(root), extra)
    return results
