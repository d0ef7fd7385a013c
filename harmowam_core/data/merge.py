"""Merge LeRobot v3.0 datasets written by DatasetWriter into one new dataset, e.g. shards collected on
several machines:

    merge_datasets("data/stack_cans", ["data/stack_cans-0", "data/stack_cans-1"])

The output keeps the layout of format.py: episodes are numbered in input order, each with its own data file and
video files at `format.chunk_file(new episode index)`. Task strings are united and re-indexed; every data file
gets its episode_index, index and task_index columns rewritten, every episode row its indices, file locations
and the per-episode stats of those three columns; stats.json and info.json are rebuilt from the rows. Every
other column of the data files and of the episodes table (stage_success, keyframes, seed, ood, detours, ...)
is carried as it is. Videos are hard-linked where the file system allows (all our writers replace files by
renames and never edit one in place, so a link is as safe as a copy) and copied otherwise.

Crash safety: the output is built in a sibling directory `OUT.partial-<hex>` and renamed to OUT at the end,
so an interrupted merge leaves no OUT; the inputs are only read, under their locks. A partial directory left by
a killed merge is removed by the next merge into the same OUT.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
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
    build_info,
    build_stats,
    read_harmowam_meta,
    read_tasks,
    stats_to_json,
    tasks_table,
)
from harmowam_core.data.stats import vector_stats
from harmowam_core.errors import DatasetError, HarmoWAMError

PARTIAL_INFIX = ".partial-"
SAME_RECIPE = "merge only datasets recorded with the same recipe"
SCENE_TYPES = {"seed": pa.int64(), "ood": pa.string()}  # episode columns naming the scene an episode comes from


@dataclass
class _Input:
    """One input dataset, read under its lock."""

    root: Path
    name: str  # the path as the user gave it, for messages
    info: dict
    spec: fmt.DatasetSpec
    meta: dict
    episodes: pa.Table
    tasks: list[str]
    rows: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rows = self.episodes.to_pylist()

    @property
    def labelled(self) -> bool:
        return fmt.LABEL_KEY in self.info["features"]

    @property
    def label_settings(self) -> dict | None:
        settings = self.meta.get("labels")
        return {k: v for k, v in settings.items() if k != "episodes"} if settings else None


@dataclass
class MergeResult:
    out: Path
    inputs: list[Path]
    episodes: int
    frames: int
    tasks: list[str]
    labels: str  # "kept", "dropped" or "none"
    videos_linked: int = 0
    videos_copied: int = 0


def merge_datasets(
    out: str | Path,
    inputs: Sequence[str | Path],
    *,
    drop_labels: bool = False,
    link: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> MergeResult:
    """Merge `inputs` (in order) into the new dataset `out`. See the module docstring.

    Labels (the `interaction` feature) are kept when every input is labelled with the same settings and
    absent when none is; any other mix is refused unless `drop_labels`, which writes the merge without labels
    (no `interaction` column, no keyframes) for `harmowam label OUT` to label afterwards. `link=False` copies
    videos instead of hard-linking them. `progress(done, total)` is called after each episode.
    """
    out = Path(out)
    paths = [Path(p) for p in inputs]
    _check_paths(out, paths)
    with _locked_inputs(paths) as ins:
        _check_compatible(ins)
        labels = _label_rule(ins, out, drop_labels)
        _check_scenes(ins)
        _check_one_file_per_episode(ins)
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(out)
        partial = out.parent / f"{out.name}{PARTIAL_INFIX}{uuid.uuid4().hex[:12]}"
        try:
            with DatasetLock(partial):  # marks it as in progress for _remove_stale_partials
                result = _build(partial, out, ins, labels, link, progress)
                _rename_into_place(partial, out)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return result


# --------------------------------------------------------------------------------------------- checks
def _check_paths(out: Path, paths: list[Path]) -> None:
    if not paths:
        raise HarmoWAMError("give at least one dataset to merge: harmowam dataset merge OUT IN [IN ...]")
    seen: dict[Path, Path] = {}
    for p in paths:
        if not p.is_dir():
            raise DatasetError(f"{p}: no such dataset directory")
        if not (p / fmt.INFO_PATH).is_file():
            raise DatasetError(
                f"{p}: not a dataset (no meta/info.json); pass directories of HarmoWAM/LeRobot v3.0 datasets"
            )
        real = p.resolve()
        if real in seen:
            raise DatasetError(f"{p}: given twice (also as {seen[real]}); pass each dataset once")
        seen[real] = p
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a directory; choose a new OUT")
    if out.is_dir() and any(out.iterdir()):
        raise DatasetError(f"{out}: exists and is not empty; choose a new OUT (a merge never writes into a dataset)")
    real_out = out.resolve()
    for real, p in seen.items():
        if real_out == real or real in real_out.parents:
            raise DatasetError(f"{out}: lies inside the input {p}; choose an OUT outside every input")


class _locked_inputs:
    """Hold every input's DatasetLock (no writer, labeller or merge changes them meanwhile) and read them."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.locks: list[DatasetLock] = []

    def __enter__(self) -> list[_Input]:
        try:
            for p in self.paths:
                lock = DatasetLock(p)
                try:
                    lock.__enter__()
                except OSError as err:  # a read-only copy: the lock file cannot be opened for writing
                    raise DatasetError(
                        f"{p}: cannot take the dataset's lock ({err.strerror}); merge needs write access to "
                        f"{p / fmt.LOCK_FILE} to keep writers out while it reads"
                    ) from None
                self.locks.append(lock)
            return [_read_input(p) for p in self.paths]
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        for lock in reversed(self.locks):
            lock.__exit__()
        self.locks.clear()


def _read_input(root: Path) -> _Input:
    info_path = root / fmt.INFO_PATH
    try:
        info = json.loads(info_path.read_text())
        spec = fmt.DatasetSpec.from_info(info)
    except (json.JSONDecodeError, KeyError, TypeError, IndexError, ValueError) as err:
        raise DatasetError(f"{info_path}: not a LeRobot v3.0 info.json ({err.__class__.__name__}: {err})") from None
    if info.get("codebase_version") != fmt.CODEBASE_VERSION:
        raise DatasetError(
            f"{info_path}: codebase_version {info.get('codebase_version')!r}; expected {fmt.CODEBASE_VERSION!r} "
            "(convert older datasets with LeRobot's converter)"
        )
    meta = read_harmowam_meta(root)
    episodes_path = root / fmt.EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes = pq.read_table(episodes_path) if episodes_path.exists() else pa.table({})
    tasks = read_tasks(root)
    return _Input(root, str(root), info, spec, meta, episodes, tasks)


def _check_compatible(ins: list[_Input]) -> None:
    first = ins[0]

    def cameras(x: _Input) -> str:
        return ", ".join(f"{n} {h}x{w}" for n, (h, w) in x.spec.cameras.items()) or "none"

    def features(x: _Input) -> dict:
        return {k: v for k, v in x.info["features"].items() if k != fmt.LABEL_KEY}

    for other in ins[1:]:
        for what, get in (
            ("fps", lambda x: x.spec.fps),
            ("arms", lambda x: x.spec.num_arms),
            ("cameras", cameras),
            ("video codec", lambda x: x.spec.codec),
            ("robot type", lambda x: x.spec.robot_type),
        ):
            a, b = get(first), get(other)
            if a != b:
                raise DatasetError(f"{first.name} and {other.name} differ in {what} ({a} vs {b}): {SAME_RECIPE}")
        fa, fb = features(first), features(other)
        if fa != fb:
            differ = sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))
            raise DatasetError(f"{first.name} and {other.name} differ in features ({', '.join(differ)}): {SAME_RECIPE}")
        ta, tb = first.meta.get("task"), other.meta.get("task")
        if ta and tb and ta != tb:
            raise DatasetError(
                f"{first.name} holds task '{ta}' and {other.name} task '{tb}': merge only datasets of one task"
            )
        sa, sb = first.meta.get("stage_names"), other.meta.get("stage_names")
        if sa and sb and sa != sb:
            raise DatasetError(
                f"{first.name} and {other.name} record different stages ({', '.join(sa)} vs {', '.join(sb)}): "
                f"{SAME_RECIPE}"
            )


def _label_rule(ins: list[_Input], out: Path, drop_labels: bool) -> str:
    """'kept', 'dropped' or 'none' (see merge_datasets); refuses a mix unless dropping."""
    labelled = [x for x in ins if x.labelled]
    if not labelled:
        return "none"
    if drop_labels:
        return "dropped"
    fix = f"merge with --drop-labels and run `harmowam label {out}` after (or label every input alike first)"
    unlabelled = [x for x in ins if not x.labelled]
    if unlabelled:
        raise DatasetError(f"{labelled[0].name} is labelled but {unlabelled[0].name} is not: {fix}")
    for other in labelled[1:]:
        a, b = labelled[0].label_settings, other.label_settings
        if a != b:
            differ = sorted(k for k in (a or {}).keys() | (b or {}).keys() if (a or {}).get(k) != (b or {}).get(k))
            raise DatasetError(
                f"{labelled[0].name} and {other.name} are labelled with different settings ({_settings(a, differ)} "
                f"vs {_settings(b, differ)}): {fix}"
            )
    return "kept"


def _settings(settings: dict | None, keys: list[str]) -> str:
    return ", ".join(f"{k} {settings.get(k)}" for k in keys) if settings else "unknown settings"


def _check_scenes(ins: list[_Input]) -> None:
    """Two inputs must not hold the same scene (seed and OOD protocol): shards collected with the same seeds
    would repeat each other's demonstrations."""
    owner: dict[tuple[int, str], _Input] = {}
    for x in ins:
        if "seed" not in x.episodes.column_names:
            continue
        mine = {(int(r["seed"]), r.get("ood") or "none") for r in x.rows if r["seed"] is not None}
        for scene in sorted(mine):
            if scene in owner:
                seed, ood = scene
                raise DatasetError(
                    f"{owner[scene].name} and {x.name} both hold the {ood} scene of seed {seed}: collect shards "
                    "with --shard i/N so their seeds differ"
                )
        owner.update(dict.fromkeys(mine, x))


def _check_one_file_per_episode(ins: list[_Input]) -> None:
    for x in ins:
        files = [fmt.data_file(x.root, r) for r in x.rows]
        if len(set(files)) != len(files):
            raise DatasetError(
                f"{x.name}: several episodes share a data file (a dataset LeRobot wrote?); merge reads datasets "
                "written by HarmoWAM, one data file per episode"
            )


# --------------------------------------------------------------------------------------------- build
def _build(
    root: Path,
    out: Path,
    ins: list[_Input],
    labels: str,
    link: bool,
    progress: Callable[[int, int], None] | None,
) -> MergeResult:
    first = ins[0]
    spec = first.spec
    tasks: list[str] = []
    for x in ins:
        tasks += [t for t in x.tasks if t not in tasks]
    extra = {k: v for k, v in first.info["features"].items() if k not in spec.features()}
    if labels == "dropped":
        extra.pop(fmt.LABEL_KEY, None)
    schema = _episodes_schema(ins, labels == "dropped")

    total = sum(len(x.episodes) for x in ins)
    result = MergeResult(out, [x.root for x in ins], 0, 0, tasks, labels)
    rows: list[dict] = []
    for x in ins:
        remap = np.array([tasks.index(t) for t in x.tasks] or [0], dtype=np.int64)  # old task_index -> new
        for old in x.rows:
            row, table = _reindex(x, old, len(rows), result.frames, remap, labels == "dropped")
            pq.write_table(table, _mkparent(fmt.data_file(root, row)), compression="snappy")
            for vk in spec.video_keys:
                linked = _place(fmt.video_file(x.root, old, vk), _mkparent(fmt.video_file(root, row, vk)), link)
                result.videos_linked += linked
                result.videos_copied += not linked
            rows.append(row)
            result.frames += row["length"]
            if progress:
                progress(len(rows), total)
    result.episodes = len(rows)

    meta = dict(first.meta) if first.meta else {"format": 1, "task": None, "arms": spec.num_arms, "stage_names": []}
    if labels == "kept":
        meta["labels"] = {**(first.meta.get("labels") or {}), "episodes": len(rows)}
    else:
        meta["labels"] = None
    meta["task"] = next((x.meta["task"] for x in ins if x.meta.get("task")), meta.get("task"))
    meta["merged_from"] = [x.name for x in ins]
    atomic_write_json(root / fmt.HARMOWAM_META_PATH, meta)
    atomic_write_table(root / fmt.TASKS_PATH, tasks_table(tasks))
    # As write_meta, but with the united schema: rows of older inputs lack newer columns (seed, ood), which
    # pa.Table.from_pylist would drop or mistype.
    if rows:
        atomic_write_table(
            root / fmt.EPISODES_PATH.format(chunk_index=0, file_index=0), pa.Table.from_pylist(rows, schema=schema)
        )
    info = build_info(spec, rows, tasks, extra)
    atomic_write_json(root / fmt.STATS_PATH, build_stats(rows, info["features"]))
    atomic_write_json(root / fmt.INFO_PATH, info)
    return result


def _episodes_schema(ins: list[_Input], drop_labels: bool) -> pa.Schema:
    """The union of the inputs' episodes-table columns, types promoted (an all-empty keyframes list<null> of
    one input and list<int64> of another give list<int64>)."""
    schemas = [x.episodes.schema for x in ins if x.episodes.num_columns]
    if not schemas:
        return pa.schema([])
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        names = ", ".join(x.name for x in ins)
        raise DatasetError(f"the episodes tables of {names} disagree on a column's type ({err})") from None
    if drop_labels:
        schema = pa.schema([f for f in schema if not f.name.startswith(f"stats/{fmt.LABEL_KEY}/")])
    for key, kind in SCENE_TYPES.items():  # typed even when no input recorded a scene
        if key in schema.names and pa.types.is_null(schema.field(key).type):
            schema = schema.set(schema.get_field_index(key), pa.field(key, kind))
    return schema.remove_metadata()


def _reindex(x: _Input, old: dict, ep: int, start: int, remap: np.ndarray, drop_labels: bool) -> tuple[dict, pa.Table]:
    """The episode's new row and data table as episode `ep` starting at global frame `start`."""
    path = fmt.data_file(x.root, old)
    table = pq.read_table(path)
    n = table.num_rows
    if n != old["length"]:
        raise DatasetError(f"{path}: {n} frames but the episodes table of {x.name} says {old['length']}")
    task_index = remap[table.column("task_index").to_numpy()]
    columns = {
        "episode_index": np.full(n, ep, dtype=np.int64),
        "index": start + np.arange(n, dtype=np.int64),
        "task_index": task_index,
    }
    for key, values in columns.items():
        table = table.set_column(table.schema.get_field_index(key), key, pa.array(values))
    if drop_labels and fmt.LABEL_KEY in table.column_names:
        table = table.drop_columns([fmt.LABEL_KEY])

    chunk, file = fmt.chunk_file(ep)
    row = dict(old)
    row.update(
        {
            "episode_index": ep,
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": start,
            "dataset_to_index": start + n,
            "meta/episodes/chunk_index": 0,
            "meta/episodes/file_index": 0,
        }
    )
    for vk in x.spec.video_keys:
        row[f"videos/{vk}/chunk_index"] = chunk
        row[f"videos/{vk}/file_index"] = file
    for key, values in columns.items():
        for s, v in stats_to_json(vector_stats(values)).items():
            row[f"stats/{key}/{s}"] = v
    if drop_labels:
        row = {k: v for k, v in row.items() if not k.startswith(f"stats/{fmt.LABEL_KEY}/")}
        row["keyframes"] = []
    return row, table


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _place(src: Path, dest: Path, link: bool) -> bool:
    """Hard-link src to dest where allowed, else copy; True when linked."""
    if link:
        try:
            os.link(src, dest)
            return True
        except OSError:  # another file system (EXDEV), or one without hard links
            pass
    shutil.copyfile(src, dest)
    return False


# --------------------------------------------------------------------------------------------- place
def _rename_into_place(partial: Path, out: Path) -> None:
    try:
        os.replace(partial, out)  # atomic; succeeds onto a missing or empty directory only
    except OSError as err:
        raise DatasetError(
            f"{out}: could not move the merged dataset into place ({err.strerror}); choose a new OUT"
        ) from None


def _remove_stale_partials(out: Path) -> None:
    """Remove OUT.partial-* directories of killed merges: those whose lock nobody holds."""
    for stale in out.parent.iterdir():
        if not (stale.name.startswith(out.name + PARTIAL_INFIX) and stale.is_dir()):
            continue
        try:
            with DatasetLock(stale):
                shutil.rmtree(stale, ignore_errors=True)
        except DatasetError:  # a merge in progress
            continue
