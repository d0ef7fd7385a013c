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
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harmowam_core.data import format as fmt
from harmowam_core.data.meta import (
    DatasetLock,
    commit_files,
    discard_staged,
    episodes_files,
    recover,
    stage_json,
    stage_table,
    stats_to_json,
)
from harmowam_core.data.stats import STAT_NAMES, aggregate, vector_stats
from harmowam_core.errors import DatasetError, ParameterError

if TYPE_CHECKING:
    from harmowam_core.data.reader import DatasetReader

LABEL_FEATURE = {"dtype": "int64", "shape": [1], "names": None}


@dataclass
class LabelSettings:
    window: int = 20
    height_thresholds: tuple[float, ...] = ()
    gripper_closed_above: float = 0.5

    def __post_init__(self) -> None:
        if self.window < 0:
            raise ParameterError("window", f"must be >= 0, got {self.window}")


def _transitions(flags: np.ndarray) -> np.ndarray:
    return np.nonzero(flags[1:] != flags[:-1])[0] + 1


def find_keyframes(
    actions: np.ndarray,
    states: np.ndarray,
    num_arms: int,
    settings: LabelSettings,
    gripper: list[int] | None = None,
    height: list[int] | None = None,
) -> np.ndarray:
    """Sorted unique keyframe indices. actions (T, A), states (T, S): by default HarmoWAM's 7 numbers per arm
    (gripper channel 6 and height channel 2 of each arm's block); `gripper` / `height` name the action and
    state channels instead (a dataset recorded elsewhere: `data.gripper`, `data.height`)."""
    gripper = [7 * arm + fmt.GRIPPER_INDEX for arm in range(num_arms)] if gripper is None else gripper
    height = [7 * arm + fmt.HEIGHT_INDEX for arm in range(num_arms)] if height is None else height
    keys: list[np.ndarray] = []
    for channel in gripper:
        keys.append(_transitions(actions[:, channel] > settings.gripper_closed_above))
    for channel in height:
        z = states[:, channel]
        for thr in settings.height_thresholds:
            keys.append(_transitions(z < thr))
    return np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)


def label_channels(reader: DatasetReader, settings: LabelSettings) -> tuple[list[int], list[int]]:
    """The gripper channels of the action and the height channels of the state that `label` reads: the
    mapping's (`data.gripper`, `data.height`), else HarmoWAM's per-arm layout where the dataset has it. Raises
    DatasetError when neither names a gripper, or a channel is out of range."""
    spec, mapping = reader.spec, reader.mapping
    per_arm = 7 * spec.num_arms
    gripper = mapping.gripper
    if gripper is None:
        if reader.native_actions:
            raise DatasetError(
                f"{reader.root}: the action '{mapping.action}' has {spec.action_dim} numbers, not HarmoWAM's 7 "
                "per arm; name its gripper channel(s), e.g. --set data.gripper=[5] (and data.height for height "
                "thresholds)"
            )
        gripper = [7 * arm + fmt.GRIPPER_INDEX for arm in range(spec.num_arms)]
    height = mapping.height
    if height is None:
        ours = spec.state_dim == per_arm and not reader.native_actions
        height = [7 * arm + fmt.HEIGHT_INDEX for arm in range(spec.num_arms)] if ours else []
    if settings.height_thresholds and not height:
        raise DatasetError(
            f"{reader.root}: gate.height_thresholds need an end-effector height; name its channel of "
            f"'{mapping.state}' with --set data.height=[i]"
        )
    for part, channels, dim in (("gripper", gripper, spec.action_dim), ("height", height, spec.state_dim)):
        bad = [c for c in channels if not 0 <= c < dim]
        if bad:
            raise DatasetError(f"{reader.root}: data.{part} channel {bad[0]} is out of range 0..{dim - 1}")
    return list(gripper), list(height)


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


def _check(reader: DatasetReader, settings: LabelSettings) -> tuple[list[int], list[int]]:
    if not reader.num_episodes:
        raise DatasetError(f"{reader.root}: no episodes yet; the dataset has no episodes to label")
    return label_channels(reader, settings)


def check_labelling(
    root: str | Path, settings: LabelSettings, mapping: fmt.DataMapping | None = None
) -> tuple[list[int], list[int]]:
    """The checks `label_dataset` makes before any work (episodes to label, gripper and height channels), for a
    command to fail before it reports anything. Returns the (gripper, height) channels."""
    from harmowam_core.data.reader import DatasetReader

    return _check(DatasetReader(root, mapping), settings)


def label_dataset(
    root: str | Path,
    settings: LabelSettings,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
    mapping: fmt.DataMapping | None = None,
) -> list[EpisodeLabels]:
    """Compute labels for every episode and, unless `dry_run`, write them into the dataset.

    root: a dataset directory or a hub id in the local LeRobot cache; mapping: which features are the action
    and state and which of their channels are grippers and heights (`label_channels`). Writes the `interaction`
    column into each data file (an episode's rows only, wherever LeRobot put them), the feature into
    info.json, the keyframe indices and per-episode label stats into the episodes table (every file of it) and
    the aggregated stats into stats.json, leaving every other feature, column and key as it was; the settings
    go into meta/harmowam.json. Re-running replaces earlier labels, all files at once (`meta.commit_files`): a
    process killed or out of disk space while writing leaves the old labels or the new ones, never a mix.
    `progress(done, total)` is called after each episode. Raises DatasetError for a dataset with no episodes or
    labels it cannot place.
    """
    from harmowam_core.data.reader import DatasetReader, resolve_dataset

    root = resolve_dataset(root)
    with DatasetLock(root):
        recover(root)
        reader = DatasetReader(root, mapping)
        gripper, height = _check(reader, settings)
        results: list[EpisodeLabels] = []
        for ep, row in enumerate(reader.episodes):
            sl = reader.episode_slice(ep)
            keys = find_keyframes(reader.action[sl], reader.state[sl], reader.num_arms, settings, gripper, height)
            labels = interaction_labels(int(reader.lengths[ep]), keys, settings.window)
            results.append(EpisodeLabels(row["episode_index"], int(reader.lengths[ep]), keys.tolist(), labels))
            if progress:
                progress(len(results), reader.num_episodes)
        if dry_run:
            return results
        meta = dict(reader.meta) or {"format": 1, "arms": reader.num_arms}
        meta["labels"] = {
            "window": settings.window,
            "height_thresholds": list(settings.height_thresholds),
            "gripper_closed_above": settings.gripper_closed_above,
            "gripper_channels": gripper,
            "height_channels": height,
            "episodes": reader.num_episodes,
        }
        staged: dict[Path, Path] = {}
        try:
            _stage_labels(reader, results, staged)
            staged[stage_json(root / fmt.HARMOWAM_META_PATH, meta)] = root / fmt.HARMOWAM_META_PATH
        except BaseException:
            discard_staged(staged)
            raise
        commit_files(root, staged)  # every file of the new labels, or (killed before it) every old one
    return results


def _stage_labels(reader: DatasetReader, results: list[EpisodeLabels], staged: dict[Path, Path]) -> None:
    """Stage the labelled data files, episodes tables, stats.json and info.json beside the files they replace,
    adding each to `staged` (temporary path -> final path) for one `commit_files`."""
    root = reader.root
    by_file: dict[Path, list[int]] = {}
    for ep in range(reader.num_episodes):
        by_file.setdefault(reader._file_rows[ep][0], []).append(ep)
    for path, eps in by_file.items():
        table = pq.read_table(path)
        if fmt.LABEL_KEY in table.column_names:
            column = table.column(fmt.LABEL_KEY).to_numpy().astype(np.int64)
            table = table.drop_columns([fmt.LABEL_KEY])
        else:
            column = np.full(table.num_rows, -1, dtype=np.int64)
        for ep in eps:
            first = reader._file_rows[ep][1]
            column[first : first + results[ep].frames] = results[ep].labels
        staged[stage_table(path, table.append_column(fmt.LABEL_KEY, pa.array(column)))] = path

    by_index = {res.episode_index: res for res in results}
    stats = {res.episode_index: stats_to_json(vector_stats(res.labels)) for res in results}
    for path in episodes_files(root):
        table = pq.read_table(path)
        stale = [c for c in table.column_names if c == "keyframes" or c.startswith(f"stats/{fmt.LABEL_KEY}/")]
        table = table.drop_columns(stale)
        indices = table.column("episode_index").to_pylist()
        keyframes = [by_index[i].keyframes if i in by_index else [] for i in indices]
        table = table.append_column("keyframes", pa.array(keyframes, pa.list_(pa.int64())))
        for name in STAT_NAMES:
            kind = pa.list_(pa.int64()) if name == "count" else pa.list_(pa.float64())
            values = [stats[i][name] if i in stats else None for i in indices]
            table = table.append_column(f"stats/{fmt.LABEL_KEY}/{name}", pa.array(values, kind))
        staged[stage_table(path, table)] = path

    stats_path = root / fmt.STATS_PATH
    all_stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    all_stats[fmt.LABEL_KEY] = stats_to_json(aggregate([vector_stats(res.labels) for res in results]))
    staged[stage_json(stats_path, all_stats)] = stats_path
    info = json.loads((root / fmt.INFO_PATH).read_text())
    info["features"][fmt.LABEL_KEY] = dict(LABEL_FEATURE)
    staged[stage_json(root / fmt.INFO_PATH, info)] = root / fmt.INFO_PATH
