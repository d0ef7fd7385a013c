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

import fcntl
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
from harmowam_core.data.stats import STAT_NAMES, ImageStatsAccumulator, aggregate, vector_stats
from harmowam_core.data.video import VideoEncoder
from harmowam_core.errors import DatasetError

VECTOR_KEYS = ("action", "observation.state")
EPISODE_SCENE_KEYS = ("seed", "ood")  # per-episode scene identity: the reset seed and the OOD protocol


# --------------------------------------------------------------------------------------------- small I/O helpers
def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=4, ensure_ascii=False) + "\n").encode())


def atomic_write_table(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, tmp, compression="snappy")
    os.replace(tmp, path)


def tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet as pandas writes it: the task string is the DataFrame index, named "task"."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def stats_to_json(stats: dict[str, np.ndarray]) -> dict:
    return {k: np.asarray(v).tolist() for k, v in stats.items()}


def _stats_from_row(row: dict, key: str) -> dict[str, np.ndarray]:
    return {s: np.asarray(row[f"stats/{key}/{s}"]) for s in STAT_NAMES if row.get(f"stats/{key}/{s}") is not None}


def episodes_files(root: Path) -> list[Path]:
    """Every `meta/episodes/chunk-*/file-*.parquet` of a dataset, in order (LeRobot rolls the table over too)."""
    return sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))


def read_episode_rows(root: Path) -> list[dict]:
    """The episodes table as dicts, from every episodes file, by episode index; rows of older datasets (and of
    datasets LeRobot wrote) get `seed` and `ood` None (unknown). Raises DatasetError naming an unreadable file,
    or episode indices that repeat."""
    rows: list[dict] = []
    for path in episodes_files(root):
        try:
            rows.extend(pq.read_table(path).to_pylist())
        except (OSError, pa.ArrowException) as err:
            raise DatasetError(f"{path}: not a readable episodes table ({err.__class__.__name__}: {err})") from None
    rows.sort(key=lambda r: r["episode_index"])
    for i, row in enumerate(rows):
        for key in EPISODE_SCENE_KEYS:
            row.setdefault(key, None)
        if i and row["episode_index"] == rows[i - 1]["episode_index"]:
            raise DatasetError(f"{root / 'meta/episodes'}: episode {row['episode_index']} has two rows")
    return rows


def harmowam_layout(rows: list[dict]) -> bool:
    """Whether the episodes follow HarmoWAM's writer: episode i alone in data file i (by chunk) and its table in
    meta/episodes/chunk-000/file-000. Datasets LeRobot wrote (several episodes per file) do not."""
    return all(
        (r.get("data/chunk_index"), r.get("data/file_index")) == fmt.chunk_file(r["episode_index"])
        and (r.get("meta/episodes/chunk_index", 0), r.get("meta/episodes/file_index", 0)) == (0, 0)
        for r in rows
    )


def episodes_table(rows: list[dict]) -> pa.Table:
    """The episodes table of `rows`; `seed` (int64) and `ood` (string) are typed even when all are null."""
    table = pa.Table.from_pylist(rows)
    for key, kind in (("seed", pa.int64()), ("ood", pa.string())):
        if key in table.column_names and table.schema.field(key).type != kind:
            i = table.column_names.index(key)
            table = table.set_column(i, pa.field(key, kind), table.column(key).cast(kind))
    return table


def used_seeds(rows: list[dict], ood: str | None = None) -> set[int]:
    """The scene seeds the episodes of `rows` were recorded from (episodes without a recorded seed left out);
    with `ood`, only those of that OOD protocol (a scene is a seed and a protocol)."""
    return {
        int(r["seed"]) for r in rows if r.get("seed") is not None and (ood is None or (r.get("ood") or "none") == ood)
    }


def build_info(spec: fmt.DatasetSpec, rows: list[dict], tasks: list[str], extra_features: dict) -> dict:
    features = spec.features()
    features.update(extra_features)
    n = len(rows)
    return {
        "codebase_version": fmt.CODEBASE_VERSION,
        "robot_type": spec.robot_type,
        "total_episodes": n,
        "total_frames": int(sum(r["length"] for r in rows)),
        "total_tasks": len(tasks),
        "chunks_size": fmt.CHUNKS_SIZE,
        "data_files_size_in_mb": fmt.DATA_FILES_SIZE_IN_MB,
        "video_files_size_in_mb": fmt.VIDEO_FILES_SIZE_IN_MB,
        "fps": spec.fps,
        "splits": {"train": f"0:{n}"} if n else {},
        "data_path": fmt.DATA_PATH,
        "video_path": fmt.VIDEO_PATH if spec.cameras else None,
        "features": features,
    }


def build_stats(rows: list[dict], features: dict) -> dict:
    if not rows:
        return {}
    return {
        key: stats_to_json(aggregate([_stats_from_row(r, key) for r in rows]))
        for key in features
        if f"stats/{key}/mean" in rows[0]
    }


def write_meta(root: Path, spec: fmt.DatasetSpec, rows: list[dict], tasks: list[str], extra_features: dict) -> None:
    """Rewrite the episodes table, stats.json and info.json (in that order) from `rows`."""
    if rows:
        atomic_write_table(root / fmt.EPISODES_PATH.format(chunk_index=0, file_index=0), episodes_table(rows))
    info = build_info(spec, rows, tasks, extra_features)
    atomic_write_json(root / fmt.STATS_PATH, build_stats(rows, info["features"]))
    atomic_write_json(root / fmt.INFO_PATH, info)


def referenced_files(root: Path, rows: list[dict], video_keys: list[str]) -> set[Path]:
    keep = {fmt.data_file(root, r) for r in rows}
    keep.update(fmt.video_file(root, r, vk) for r in rows for vk in video_keys)
    return keep


def recover(root: Path) -> None:
    """Bring a dataset whose writer died back to its last committed state. Caller holds the lock."""
    shutil.rmtree(root / fmt.STAGING_DIR, ignore_errors=True)
    info_path = root / fmt.INFO_PATH
    if not info_path.exists():
        return
    info = json.loads(info_path.read_text())
    rows = read_episode_rows(root)
    if not harmowam_layout(rows):
        return  # written elsewhere (LeRobot): its files are its own, and HarmoWAM never appends to them
    spec = fmt.DatasetSpec.from_info(info)
    keep = referenced_files(root, rows, spec.video_keys)
    for folder in [root / "data"] + [root / "videos" / vk for vk in spec.video_keys]:
        for path in folder.glob("chunk-*/*"):
            if path not in keep:
                path.unlink()
        for path in folder.glob("chunk-*/.*.tmp"):
            path.unlink()
    if info["total_episodes"] != len(rows) or info["total_frames"] != sum(r["length"] for r in rows):
        extra = {k: v for k, v in info["features"].items() if k not in spec.features()}
        write_meta(root, spec, rows, read_tasks(root), extra)


def read_tasks(root: Path) -> list[str]:
    """The task strings of meta/tasks.parquet, by task_index. The task string may be a column or the pandas
    index, named "task" (as HarmoWAM writes it) or unnamed and stored as `__index_level_0__` (as LeRobot writes
    it); the file's pandas metadata says which column holds the index. Raises DatasetError when it has none."""
    path = root / fmt.TASKS_PATH
    if not path.exists():
        return []
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise DatasetError(f"{path}: not a readable tasks table ({err.__class__.__name__}: {err})") from None
    pandas_meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
    index = [c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)]
    names = table.column_names
    column = next((c for c in ["task", *index, "__index_level_0__"] if c in names), None)
    kind = table.schema.field(column).type if column else None
    if "task_index" not in names or kind is None or not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DatasetError(
            f"{path}: expected task strings (a `task` column or index) and a task_index column; it has "
            f"{', '.join(names) or 'none'}"
        )
    t = table.select([column, "task_index"]).to_pydict()
    return [task for _, task in sorted(zip(t["task_index"], t[column], strict=True))]


def _new_meta(spec: fmt.DatasetSpec, task_name=None, stage_names=None, recipe=None) -> dict:
    return {
        "format": 1,
        "task": task_name,
        "arms": spec.num_arms,
        "stage_names": list(stage_names or []),
        "recipe": recipe,
        "labels": None,
    }


class DatasetLock:
    """An exclusive advisory lock on a dataset, released when the holding process dies."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.fd: int | None = None

    def __enter__(self) -> DatasetLock:
        self.root.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.root / fmt.LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise DatasetError(f"{self.root}: another process is writing this dataset; wait for it to finish") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# --------------------------------------------------------------------------------------------- writer
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
                atomic_write_json(meta_path, _new_meta(self.spec, task_name))
            self.meta = json.loads(meta_path.read_text())
            if task_name and self.meta.get("task") not in (None, task_name):
                raise DatasetError(
                    f"{self.root}: holds task '{self.meta['task']}', not '{task_name}'. Write to another --out"
                )
        else:
            if spec is None:
                raise DatasetError(f"{self.root}: no dataset here (meta/info.json is missing)")
            self.spec = spec
            self.extra_features = {}
            self.meta = _new_meta(spec, task_name, stage_names, recipe)
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
    staged mp4; image_stats: camera -> per-channel stats; seed/ood: the scene (None when unknown)."""

    staging: Path
    task: str
    actions: np.ndarray
    states: np.ndarray
    videos: dict[str, Path]
    image_stats: dict[str, dict[str, np.ndarray]]
    stage_success: list[bool] = field(default_factory=list)
    seed: int | None = None
    ood: str | None = None

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
        self, stage_success: list[bool] | None = None, seed: int | None = None, ood: str | None = None
    ) -> StagedEpisode:
        """Close the videos and hand the staged episode over for a commit."""
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
        )

    def save(self, stage_success: list[bool] | None = None, seed: int | None = None, ood: str | None = None) -> int:
        """Commit the episode into the recorder's writer; returns its episode index."""
        if self.writer is None:
            raise RuntimeError("a recorder without a writer hands its episode over with finish()")
        return self.writer.commit(self.finish(stage_success, seed, ood))

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
