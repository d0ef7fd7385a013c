"""Append-only, crash-safe writer for LeRobotDataset v3.0 datasets.

    with DatasetWriter(root, spec, task_name="stack_cans", stage_names=["beside", "on_top"]) as writer:
        with writer.episode("stack the cans") as ep:
            for step in ...:
                ep.add_frame(action, state, {"front": rgb, ...})   # rgb: (H, W, 3) uint8
            ep.save(stage_success=[True, False])

An episode is recorded into `root/.staging/` (video frames are encoded as they arrive) and committed by
renames. A recorder needs no writer: a simulator worker process records into the staging folder with
`EpisodeRecorder(spec, staging_root, task).finish(...)`, and only the process holding the writer commits the
returned `StagedEpisode` with `writer.commit(staged)`. Every episode row records the scene's `seed` and its
OOD protocol `ood` (null when unknown: episodes of older datasets, the real station's). Commits are
renames: videos, then the data file, then the episodes table, then info.json and stats.json. A process
killed while recording leaves only staging files, which the next writer removes; a process killed during
the few renames of a commit leaves files that no episode row references, which the next writer (or reader)
also removes. Either way every episode is wholly in the dataset or absent.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harmowam_core.data import format as fmt
from harmowam_core.data.meta import (
    DatasetLock,
    atomic_write_json,
    atomic_write_table,
    harmowam_layout,
    new_meta,
    read_episode_rows,
    read_harmowam_meta,
    read_tasks,
    recover,
    stats_to_json,
    tasks_table,
    write_meta,
)
from harmowam_core.data.stats import ImageStatsAccumulator, vector_stats
from harmowam_core.data.video import VideoEncoder
from harmowam_core.errors import DatasetError


class DatasetWriter:
    """Opens (or creates) a dataset for appending episodes. Holds the dataset's lock until closed."""

    def __init__(
        self,
        root: str | Path,
        spec: fmt.DatasetSpec | None = None,
        *,
        task_name: str | None = None,
        stage_names: list[str] | None = None,
        recipe: dict | None = None,
    ):
        self.root = Path(root)
        self._lock = DatasetLock(self.root).__enter__()
        try:
            self._open(spec, task_name, stage_names, recipe)
        except BaseException:
            self._lock.__exit__()
            raise

    def _open(self, spec, task_name, stage_names, recipe) -> None:
        recover(self.root)
        info_path = self.root / fmt.INFO_PATH
        if info_path.exists():
            if not harmowam_layout(read_episode_rows(self.root)):
                raise DatasetError(
                    f"{self.root}: written by another tool (several episodes per file); HarmoWAM appends only to "
                    "its own datasets. Write to another --out"
                )
            info = json.loads(info_path.read_text())
            self.spec = fmt.DatasetSpec.from_info(info)
            if spec is not None and (spec.fps, spec.num_arms, spec.cameras) != (
                self.spec.fps,
                self.spec.num_arms,
                self.spec.cameras,
            ):
                raise DatasetError(
                    f"{self.root}: existing dataset has fps {self.spec.fps}, {self.spec.num_arms} arm(s), cameras "
                    f"{self.spec.cameras}; cannot append fps {spec.fps}, {spec.num_arms} arm(s), cameras "
                    f"{spec.cameras}. Write to another --out"
                )
            self.extra_features = {k: v for k, v in info["features"].items() if k not in self.spec.features()}
            meta_path = self.root / fmt.HARMOWAM_META_PATH
            # A dataset written elsewhere (e.g. by LeRobot itself) has no harmowam.json: start one.
            if not meta_path.is_file():
                atomic_write_json(meta_path, new_meta(self.spec, task_name))
            self.meta = read_harmowam_meta(self.root)
            if task_name and self.meta.get("task") not in (None, task_name):
                raise DatasetError(
                    f"{self.root}: holds task '{self.meta['task']}', not '{task_name}'. Write to another --out"
                )
        else:
            if spec is None:
                raise DatasetError(f"{self.root}: no dataset here (meta/info.json is missing)")
            self.spec = spec
            self.extra_features = {}
            self.meta = new_meta(spec, task_name, stage_names, recipe)
            atomic_write_json(self.root / fmt.HARMOWAM_META_PATH, self.meta)
            write_meta(self.root, self.spec, [], [], {})
        self.rows = read_episode_rows(self.root)
        self.tasks = read_tasks(self.root)

    # ------------------------------------------------------------------ API
    @property
    def num_episodes(self) -> int:
        return len(self.rows)

    @property
    def num_frames(self) -> int:
        return int(sum(r["length"] for r in self.rows))

    @property
    def staging_root(self) -> Path:
        """Where recorders (in this process or in simulator workers) stage episodes before the commit."""
        return self.root / fmt.STAGING_DIR

    def episode(self, task: str) -> EpisodeRecorder:
        return EpisodeRecorder(self.spec, self.staging_root, task, writer=self)

    def commit(self, staged: StagedEpisode) -> int:
        """Commit an episode staged by a recorder (of this process or of a worker); returns its episode index."""
        if not staged.staging.is_relative_to(self.staging_root):
            raise ValueError(f"{staged.staging} is not staged in {self.staging_root}")
        return self._commit(staged)

    def close(self) -> None:
        shutil.rmtree(self.root / fmt.STAGING_DIR, ignore_errors=True)
        self._lock.__exit__()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ commit
    def _commit(self, rec: StagedEpisode) -> int:
        ep = len(self.rows)
        n = len(rec.actions)
        start = self.num_frames
        chunk, file = fmt.chunk_file(ep)
        if rec.task not in self.tasks:
            self.tasks.append(rec.task)
            atomic_write_table(self.root / fmt.TASKS_PATH, tasks_table(self.tasks))
        task_index = self.tasks.index(rec.task)

        actions = np.asarray(rec.actions, dtype=np.float32)
        states = np.asarray(rec.states, dtype=np.float32)
        frame_index = np.arange(n, dtype=np.int64)
        columns = {
            "action": pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1)), self.spec.action_dim),
            "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(states.reshape(-1)), self.spec.state_dim),
            "timestamp": pa.array((frame_index / self.spec.fps).astype(np.float32)),
            "frame_index": pa.array(frame_index),
            "episode_index": pa.array(np.full(n, ep, dtype=np.int64)),
            "index": pa.array(start + frame_index),
            "task_index": pa.array(np.full(n, task_index, dtype=np.int64)),
        }
        for key in self.extra_features:  # e.g. `interaction` once the dataset is labelled: unlabelled = -1
            columns[key] = pa.array(np.full(n, -1, dtype=np.int64))
        staged_data = rec.staging / "data.parquet"
        pq.write_table(pa.table(columns), staged_data, compression="snappy")

        row: dict = {
            "episode_index": ep,
            "tasks": [rec.task],
            "length": n,
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": start,
            "dataset_to_index": start + n,
        }
        for name in self.spec.cameras:
            vk = fmt.IMAGE_KEY_PREFIX + name
            row[f"videos/{vk}/chunk_index"] = chunk
            row[f"videos/{vk}/file_index"] = file
            row[f"videos/{vk}/from_timestamp"] = 0.0
            row[f"videos/{vk}/to_timestamp"] = n / self.spec.fps
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        stats = {
            "action": vector_stats(actions),
            "observation.state": vector_stats(states),
            "timestamp": vector_stats(frame_index / self.spec.fps),
            "frame_index": vector_stats(frame_index),
            "episode_index": vector_stats(np.full(n, ep)),
            "index": vector_stats(start + frame_index),
            "task_index": vector_stats(np.full(n, task_index)),
        }
        for key in self.extra_features:
            stats[key] = vector_stats(np.full(n, -1))
        stats.update({fmt.IMAGE_KEY_PREFIX + c: st for c, st in rec.image_stats.items()})
        for key, st in stats.items():
            for s, v in stats_to_json(st).items():
                row[f"stats/{key}/{s}"] = v
        row["stage_success"] = [bool(x) for x in rec.stage_success]
        row["keyframes"] = []  # filled by `harmowam label`
        row["seed"] = rec.seed
        row["ood"] = rec.ood
        row[fmt.DETOURS_KEY] = list(rec.detours)

        # Commit: files first (not visible until a row references them), then the episode row, then totals.
        for name, path in rec.videos.items():
            vk = fmt.IMAGE_KEY_PREFIX + name
            dest = fmt.video_file(self.root, row, vk)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
        dest = fmt.data_file(self.root, row)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged_data, dest)
        self.rows.append(row)
        write_meta(self.root, self.spec, self.rows, self.tasks, self.extra_features)
        shutil.rmtree(rec.staging, ignore_errors=True)
        return ep


@dataclass
class StagedEpisode:
    """A recorded episode waiting in the staging folder for `DatasetWriter.commit` (picklable: a simulator worker
    hands it to the process holding the writer). actions/states: (T, A) / (T, S) float32; videos: camera ->
    staged mp4; image_stats: camera -> per-channel stats; seed/ood: the scene (None when unknown); detours: the
    frames where the scripted expert went astray on purpose (`format.frame_runs`), whose actions are not its own."""

    staging: Path
    task: str
    actions: np.ndarray
    states: np.ndarray
    videos: dict[str, Path]
    image_stats: dict[str, dict[str, np.ndarray]]
    stage_success: list[bool] = field(default_factory=list)
    seed: int | None = None
    ood: str | None = None
    detours: list[int] = field(default_factory=list)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


class EpisodeRecorder:
    """Frames of one episode in progress, staged under `staging_root`; nothing is visible in a dataset until it
    is committed (`save` with a writer, or `finish` and `DatasetWriter.commit` in the writer's process)."""

    def __init__(self, spec: fmt.DatasetSpec, staging_root: Path, task: str, writer: DatasetWriter | None = None):
        self.spec, self.writer, self.task = spec, writer, task
        self.staging = Path(staging_root) / uuid.uuid4().hex
        self.staging.mkdir(parents=True)
        self.encoders = {
            name: VideoEncoder(self.staging / f"{name}.mp4", spec.fps, h, w, spec.codec)
            for name, (h, w) in spec.cameras.items()
        }
        self.image_stats = {name: ImageStatsAccumulator() for name in spec.cameras}
        self.actions: list[np.ndarray] = []
        self.states: list[np.ndarray] = []
        self.done = False

    def __len__(self) -> int:
        return len(self.actions)

    def add_frame(self, action: np.ndarray, state: np.ndarray, images: dict[str, np.ndarray]) -> None:
        spec = self.spec
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        state = np.asarray(state, dtype=np.float32).reshape(-1)
        if action.shape != (spec.action_dim,) or state.shape != (spec.state_dim,):
            raise ValueError(
                f"expected action ({spec.action_dim},) and state ({spec.state_dim},), "
                f"got {action.shape} and {state.shape}"
            )
        if set(images) != set(spec.cameras):
            raise ValueError(f"expected images for cameras {sorted(spec.cameras)}, got {sorted(images)}")
        for name, rgb in images.items():
            self.encoders[name].add(rgb)
            self.image_stats[name].add(rgb)
        self.actions.append(action)
        self.states.append(state)

    def finish(
        self,
        stage_success: list[bool] | None = None,
        seed: int | None = None,
        ood: str | None = None,
        detours: list[int] | None = None,
    ) -> StagedEpisode:
        """Close the videos and hand the staged episode over for a commit (`detours`: `StagedEpisode.detours`)."""
        if self.done:
            raise RuntimeError("episode already saved or discarded")
        if not self.actions:
            raise ValueError("cannot save an episode with no frames")
        self.done = True
        for enc in self.encoders.values():
            enc.close()
        return StagedEpisode(
            staging=self.staging,
            task=self.task,
            actions=np.asarray(self.actions, dtype=np.float32),
            states=np.asarray(self.states, dtype=np.float32),
            videos={name: enc.path for name, enc in self.encoders.items()},
            image_stats={name: acc.result() for name, acc in self.image_stats.items()},
            stage_success=[bool(x) for x in (stage_success or [])],
            seed=None if seed is None else int(seed),
            ood=ood,
            detours=[int(f) for f in (detours or [])],
        )

    def save(
        self,
        stage_success: list[bool] | None = None,
        seed: int | None = None,
        ood: str | None = None,
        detours: list[int] | None = None,
    ) -> int:
        """Commit the episode into the recorder's writer; returns its episode index."""
        if self.writer is None:
            raise RuntimeError("a recorder without a writer hands its episode over with finish()")
        return self.writer.commit(self.finish(stage_success, seed, ood, detours))

    def discard(self) -> None:
        if self.done:
            return
        self.done = True
        for enc in self.encoders.values():
            try:
                enc.close()
            except Exception:  # an encoder that never got a frame may refuse to flush
                pass
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> EpisodeRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()
