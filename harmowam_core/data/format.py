"""The LeRobotDataset v3.0 layout, as written and read here.

    root/
      meta/info.json                                  codebase_version "v3.0", fps, features, path templates
      meta/stats.json                                 per-feature min/max/mean/std/count and quantiles
                                                      q01/q10/q50/q90/q99 (LeRobot 0.4's quantile normalisation)
      meta/tasks.parquet                              task string (the pandas index) -> task_index
      meta/episodes/chunk-XXX/file-XXX.parquet        one row per episode: length, from/to index, file
                                                      locations, per-episode stats, stage results, keyframes,
                                                      scene (seed, ood), the scripted expert's detours
      meta/harmowam.json                              what LeRobot does not model: task name, arms, stage names,
                                                      recipe snapshot, labelling settings
      data/chunk-XXX/file-XXX.parquet                 frames: action, observation.state, timestamp, indices
      videos/observation.images.<camera>/chunk-XXX/file-XXX.mp4

HarmoWAM's writer gives each episode its own data file and video file per camera (file index = episode index
within its chunk), which makes appending crash-safe: an episode is staged aside and committed with renames.
The reader accepts any v3.0 dataset, as LeRobot 0.4 writes them: several episodes per data and video file,
sliced by the episodes table (`dataset_from_index`/`dataset_to_index` for the frames, per camera
`from_timestamp`/`to_timestamp` for the video), files rolling over to `file-001` past a size limit, the
episodes table itself in several files, image features stored in the parquet files as PNG bytes instead of
video, and features HarmoWAM does not use (carried, read only when a recipe's `data:` section maps them).

A dataset downloaded from elsewhere is untrusted input: every path its metadata names (the `data_path` and
`video_path` templates of info.json, the chunk and file indices of the episodes table, a camera's feature key,
an image cell's `path`) is checked to stay inside the dataset's root before it is opened (`inside`,
`check_template`, `safe_name`), and refused with a `DatasetError` naming the key otherwise.
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from harmowam_core.errors import DatasetError

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk directory, as in LeRobot
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
HARMOWAM_META_PATH = "meta/harmowam.json"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
STAGING_DIR = ".staging"
LOCK_FILE = ".lock"

IMAGE_KEY_PREFIX = "observation.images."
LABEL_KEY = "interaction"
# episodes-table column: frames whose actions are not the expert's (its recovery detours, a learned policy's steps
# before a takeover), as [start, end) pairs
DETOURS_KEY = "detours"
ACTION_KEY = "action"
STATE_KEY = "observation.state"
CAMERA_DTYPES = ("video", "image")
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # LeRobot 0.4's: stats keys q01, q10, q50, q90, q99

DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}

ARM_ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
ARM_STATE_NAMES = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
GRIPPER_INDEX = 6  # within each arm's block of 7, in both action and state
HEIGHT_INDEX = 2  # end-effector z within each arm's block of observation.state

CODECS = {"h264": "libx264", "av1": "libsvtav1"}


def frame_runs(frames: list[int]) -> list[int]:
    """Ascending frame indices as runs of consecutive frames, flattened [start0, end0, start1, end1, ...] with
    each end exclusive (how an episode row stores its detours): [3, 4, 5, 9] -> [3, 6, 9, 10]."""
    runs: list[int] = []
    for f in frames:
        if runs and f == runs[-1]:
            runs[-1] = f + 1
        else:
            runs += [int(f), int(f) + 1]
    return runs


def runs_mask(runs: list[int] | None, length: int) -> np.ndarray:
    """(length,) bool: the frames inside the [start, end) runs of `frame_runs` (None or [] -> none). Raises
    DatasetError when the list is not pairs of ascending frames within the episode."""
    mask = np.zeros(length, dtype=bool)
    runs = [int(f) for f in (runs or [])]
    ascending = all(b > a for a, b in zip(runs[:-1], runs[1:], strict=True))
    if len(runs) % 2 or not ascending or (runs and (runs[0] < 0 or runs[-1] > length)):
        raise DatasetError(f"{DETOURS_KEY} {runs} are not ascending [start, end) runs within {length} frames")
    for a, b in zip(runs[::2], runs[1::2], strict=True):
        mask[a:b] = True
    return mask


def safe_name(name: object, what: str) -> str:
    """`name` where it becomes one component of a file path (a camera's feature key names its video folder);
    DatasetError naming `what` where it could name a file elsewhere: not a string, empty, `.` or `..`, or
    holding a path separator (`/`, `\\`) or a NUL."""
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise DatasetError(
            f"{what} {name!r}: refused, a camera's feature key becomes a folder name and this one could name a "
            "file outside the dataset (no '/', '\\', '.' or '..' allowed)"
        )
    return name


def camera_name(key: str) -> str:
    """A camera's name from its feature key: `observation.images.laptop` -> `laptop` (other keys unchanged).
    Raises DatasetError for a key that could name a path outside the dataset (`safe_name`)."""
    safe_name(key, "camera feature key")
    return key[len(IMAGE_KEY_PREFIX) :] if key.startswith(IMAGE_KEY_PREFIX) else key


def inside(root: Path, relative: str, what: str) -> Path:
    """`root / relative`, refused with a DatasetError naming `what` where it lies outside `root`: an absolute path
    or one whose `..` climb out. The check is lexical, on `relative` alone, so any root works (`.` too: a dataset
    opened from inside it); symlinks within the dataset are followed as placed (the Hugging Face cache links
    snapshot files to its blobs)."""
    text = str(relative)
    rel = os.path.normpath(text)
    if "\0" in text or os.path.isabs(text) or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise DatasetError(f"{what}: {text!r} lies outside the dataset ({root}); refused")
    return Path(root) / rel  # normalised: no `..` left for a linked folder to resolve elsewhere


_INDEX_SPEC = re.compile(r"0?\d*d?")
TEMPLATE_FIELDS = {"data_path": ("chunk_index", "file_index"), "video_path": ("video_key", "chunk_index", "file_index")}


def check_template(template: object, key: str, where: str) -> str:
    """A path template of info.json (`data_path` or `video_path`) as LeRobot writes them: relative, with only the
    fields `chunk_index` and `file_index` (an optional integer format such as `:03d`) and, for videos,
    `video_key` (no format). DatasetError naming `where` and the key otherwise."""
    fields = TEMPLATE_FIELDS[key]
    problem = None
    if not isinstance(template, str) or not template:
        problem = "not a path template"
    else:
        try:
            parts = list(string.Formatter().parse(template))
        except ValueError as err:
            parts, problem = [], f"not a format string ({err})"
        for _, name, spec, conversion in parts:
            if name is None:
                continue
            if name not in fields or conversion or (spec and (name == "video_key" or not _INDEX_SPEC.fullmatch(spec))):
                problem = f"field {{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
                problem += f" is not one of {', '.join('{' + f + '}' for f in fields)}"
                break
        if problem is None and (os.path.isabs(template) or ".." in template.replace("\\", "/").split("/")):
            problem = "an absolute path or one that climbs out with '..'"
    if problem:
        raise DatasetError(f"{where}: key '{key}': {template!r} is refused: {problem}")
    return template


def file_index(row: dict, key: str) -> int:
    """An episode row's chunk or file index: a whole number >= 0; DatasetError naming the episode otherwise."""
    value = row.get(key)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise DatasetError(
            f"episode {row.get('episode_index')}: '{key}' is {value!r}, not a file index (a whole number >= 0)"
        )
    return int(value)


def arm_prefixes(num_arms: int) -> list[str]:
    return [""] if num_arms == 1 else ["left_", "right_"]


def chunk_file(episode_index: int) -> tuple[int, int]:
    return divmod(episode_index, CHUNKS_SIZE)


def data_file(root: Path, row: dict, template: str = DATA_PATH) -> Path:
    """The data parquet file an episode row points at, by the dataset's `data_path` template (checked with
    `check_template`). DatasetError where the row's indices are not file indices or the path leaves root."""
    chunk, file = file_index(row, "data/chunk_index"), file_index(row, "data/file_index")
    where = f"episode {row.get('episode_index')}'s data file"
    return inside(root, template.format(chunk_index=chunk, file_index=file), where)


def video_file(root: Path, row: dict, video_key: str, template: str = VIDEO_PATH) -> Path:
    """The mp4 file of one camera that an episode row points at, by the dataset's `video_path` template
    (checked with `check_template`). DatasetError for an unsafe key, bad indices or a path outside root."""
    safe_name(video_key, "camera feature key")
    chunk = file_index(row, f"videos/{video_key}/chunk_index")
    file = file_index(row, f"videos/{video_key}/file_index")
    where = f"episode {row.get('episode_index')}'s '{video_key}' video"
    return inside(root, template.format(video_key=video_key, chunk_index=chunk, file_index=file), where)


def vector_column(table: pa.Table, key: str) -> np.ndarray:
    """A fixed-size-list column (action, observation.state) as a (rows, dim) array."""
    return np.asarray(table.column(key).combine_chunks().flatten()).reshape(table.num_rows, -1)


@dataclass
class DataMapping:
    """Which features of a dataset play which part in training and labelling (a recipe's `data:` section).

    cameras: our camera name -> the dataset's image or video feature key; empty: every camera of the
    dataset under its own name (`observation.images.front` -> `front`), as in HarmoWAM's datasets.
    action / state: the feature keys of the action the experts learn and of the proprioceptive state.
    gripper: action channels that command a gripper, height: state channels that are an end-effector height
    (`harmowam label`'s key events); None: HarmoWAM's layout, channels 6 and 2 of each arm's block of 7.
    """

    cameras: dict[str, str] = field(default_factory=dict)
    action: str = ACTION_KEY
    state: str = STATE_KEY
    gripper: list[int] | None = None
    height: list[int] | None = None


@dataclass
class DatasetSpec:
    """What a dataset holds: rates, shapes and cameras. Built from a recipe or read back from info.json.

    action_dim / state_dim default to HarmoWAM's 7 numbers per arm; a dataset recorded elsewhere keeps its own
    (an SO-101's 6 joint positions)."""

    fps: int
    num_arms: int = 1
    cameras: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (height, width)
    robot_type: str = "franka"
    codec: str = "h264"
    action_dim: int | None = None
    state_dim: int | None = None

    def __post_init__(self) -> None:
        self.cameras = {name: (int(hw[0]), int(hw[1])) for name, hw in self.cameras.items()}
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        self.action_dim = 7 * self.num_arms if self.action_dim is None else int(self.action_dim)
        self.state_dim = 7 * self.num_arms if self.state_dim is None else int(self.state_dim)

    @property
    def video_keys(self) -> list[str]:
        return [IMAGE_KEY_PREFIX + name for name in self.cameras]

    def features(self) -> dict:
        names = [p + n for p in arm_prefixes(self.num_arms) for n in ARM_ACTION_NAMES]
        state_names = [p + n for p in arm_prefixes(self.num_arms) for n in ARM_STATE_NAMES]
        feats: dict = {
            "action": {"dtype": "float32", "shape": [self.action_dim], "names": names},
            "observation.state": {"dtype": "float32", "shape": [self.state_dim], "names": state_names},
        }
        for name, (h, w) in self.cameras.items():
            feats[IMAGE_KEY_PREFIX + name] = {
                "dtype": "video",
                "shape": [h, w, 3],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": h,
                    "video.width": w,
                    "video.codec": self.codec,
                    "video.pix_fmt": "yuv420p",
                    "video.is_depth_map": False,
                    "video.fps": self.fps,
                    "video.channels": 3,
                    "has_audio": False,
                },
            }
        feats.update({k: dict(v) for k, v in DEFAULT_FEATURES.items()})
        return feats

    @classmethod
    def from_info(cls, info: dict, arms: int | None = None) -> DatasetSpec:
        """The spec of an info.json. `arms`: the count meta/harmowam.json records; otherwise 7 action numbers per
        arm where the action divides so, else 1 (an arm with its own action vector, such as an SO-101's 6)."""
        feats = info["features"]
        cams = {
            camera_name(k): (v["shape"][0], v["shape"][1])
            for k, v in feats.items()
            if v.get("dtype") in CAMERA_DTYPES and len(v.get("shape") or ()) == 3
        }
        codec = next(
            ((v.get("info") or {}).get("video.codec") for v in feats.values() if v.get("dtype") == "video"), "h264"
        )
        action_dim = int(feats[ACTION_KEY]["shape"][0]) if ACTION_KEY in feats else None
        state_dim = int(feats[STATE_KEY]["shape"][0]) if STATE_KEY in feats else None
        if arms is None:
            arms = action_dim // 7 if action_dim and action_dim % 7 == 0 else 1
        return cls(
            fps=int(info["fps"]),
            num_arms=int(arms),
            cameras=cams,
            robot_type=info.get("robot_type") or "franka",
            codec=codec if codec in CODECS else "h264",
            action_dim=action_dim,
            state_dim=state_dim,
        )
