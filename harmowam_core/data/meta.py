"""The dataset's metadata store (LeRobotDataset v3.0 `meta/`): atomic writes, the episodes table and its rows,
tasks, `info.json` and `stats.json`, crash recovery of a half-committed episode, and the dataset lock.

    rows = read_episode_rows(root)          # one dict per committed episode, in order
    write_meta(root, spec, rows, tasks, {}) # info.json + stats.json from the rows (atomic)
    recover(root)                           # remove files no episode row references
    commit_files(root, {tmp: dest, ...})    # several staged files into place, all or none after a kill
    with DatasetLock(root): ...             # one writer at a time (fcntl)

The writer (`data.writer`) commits episodes through it, the reader (`data.reader`), the labeller
(`data.labels`) and the merger (`data.merge`) read and rewrite it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harmowam_core.data import format as fmt
from harmowam_core.data.stats import STAT_NAMES, aggregate
from harmowam_core.errors import DatasetError

VECTOR_KEYS = ("action", "observation.state")
EPISODE_SCENE_KEYS = ("seed", "ood")  # per-episode scene identity: the reset seed and the OOD protocol
PENDING_PATH = "meta/.commit.json"  # the renames of a multi-file commit in progress (`commit_files`)


# --------------------------------------------------------------------------------------------- small I/O helpers
def read_harmowam_meta(root: Path) -> dict:
    """meta/harmowam.json of a dataset (what HarmoWAM records beside LeRobot's files: task, recipe, labels), or {}
    where there is none (a dataset LeRobot wrote). Raises DatasetError, one line, for a file that is not a JSON
    mapping: it is never overwritten."""
    path = Path(root) / fmt.HARMOWAM_META_PATH
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: not readable JSON ({err.__class__.__name__}); restore it or remove it") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON mapping, got {type(meta).__name__}; restore it or remove it")
    return meta


def staged_path(path: Path) -> Path:
    """A temporary name beside `path` (`.<name>.<hex>.tmp`): what `recover` removes when no commit claims it."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def stage_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path` (synced) and return it; nothing is left on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = staged_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def stage_json(path: Path, obj: dict) -> Path:
    return stage_bytes(path, (json.dumps(obj, indent=4, ensure_ascii=False) + "\n").encode())


def stage_table(path: Path, table: pa.Table) -> Path:
    """`stage_bytes` for a parquet table (snappy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = staged_path(path)
    try:
        pq.write_table(table, tmp, compression="snappy")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    os.replace(stage_bytes(path, data), path)


def atomic_write_json(path: Path, obj: dict) -> None:
    os.replace(stage_json(path, obj), path)


def atomic_write_table(path: Path, table: pa.Table) -> None:
    os.replace(stage_table(path, table), path)


def commit_files(root: Path, staged: dict[Path, Path]) -> None:
    """Move staged files (temporary path -> final path, all inside `root`) into place together: the list is
    recorded first (`PENDING_PATH`, written atomically), so a process killed during the renames leaves it for
    `finish_commit` (every writer, labeller and reader calls it) to complete. After a kill the dataset holds
    every new file or none of them."""
    journal = root / PENDING_PATH
    renames = [[tmp.relative_to(root).as_posix(), dest.relative_to(root).as_posix()] for tmp, dest in staged.items()]
    atomic_write_json(journal, {"renames": renames})
    finish_commit(root)


def finish_commit(root: Path) -> None:
    """Complete the renames of a `commit_files` that a killed process left (none: nothing to do). Idempotent."""
    journal = Path(root) / PENDING_PATH
    try:
        renames = json.loads(journal.read_text())["renames"]
    except FileNotFoundError:
        return
    for tmp, dest in renames:
        try:
            os.replace(root / tmp, root / dest)
        except FileNotFoundError:  # moved already
            pass
    journal.unlink(missing_ok=True)


def discard_staged(staged: dict[Path, Path]) -> None:
    """Remove the temporary files of a commit that will not happen (an error while staging them)."""
    for tmp in staged:
        tmp.unlink(missing_ok=True)


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
    datasets LeRobot wrote) get `seed` and `ood` None (unknown) and `detours` [] (none recorded). Raises
    DatasetError naming an unreadable file, or episode indices that repeat."""
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
        if row.get(fmt.DETOURS_KEY) is None:  # an older episode, or a merged dataset's without the column
            row[fmt.DETOURS_KEY] = []
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
    """The episodes table of `rows`; `seed` (int64), `ood` (string) and `detours` (list of int64) are typed even
    when all are null or empty."""
    table = pa.Table.from_pylist(rows)
    for key, kind in (("seed", pa.int64()), ("ood", pa.string()), (fmt.DETOURS_KEY, pa.list_(pa.int64()))):
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
    """Bring a dataset whose writer or labeller died back to its last committed state: finish a multi-file commit
    that was renaming (`finish_commit`), remove temporary files no commit claims and files no episode row
    references. Caller holds the lock."""
    shutil.rmtree(root / fmt.STAGING_DIR, ignore_errors=True)
    finish_commit(root)
    for folder in [root / "meta", *root.glob("meta/episodes/chunk-*"), *root.glob("data/chunk-*")]:
        for path in folder.glob(".*.tmp"):
            path.unlink()
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


def new_meta(spec: fmt.DatasetSpec, task_name=None, stage_names=None, recipe=None) -> dict:
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
