"""The LeRobotDataset v3.0 layout, as written and read here.

    root/
      meta/info.json                                  codebase_version "v3.0", fps, features, path templates
      meta/stats.json                                 per-feature min/max/mean/std/count
      meta/tasks.parquet                              task string (pandas index "task") -> task_index
      meta/episodes/chunk-000/file-000.parquet        one row per episode: length, from/to index, file
                                                      locations, per-episode stats, stage results, keyframes
      meta/harmowam.json                              what LeRobot does not model: task name, arms, stage names,
                                                      recipe snapshot, labelling settings
      data/chunk-XXX/file-XXX.parquet                 frames: action, observation.state, timestamp, indices
      videos/observation.images.<camera>/chunk-XXX/file-XXX.mp4

Each episode owns one data file and one video file per camera (file index = episode index within its chunk),
which makes appending crash-safe: an episode is staged aside and committed with renames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

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


def arm_prefixes(num_arms: int) -> list[str]:
    return [""] if num_arms == 1 else ["left_", "right_"]


def chunk_file(episode_index: int) -> tuple[int, int]:
    return divmod(episode_index, CHUNKS_SIZE)


def data_file(root: Path, row: dict) -> Path:
    """The data parquet file an episode row points at."""
    return root / DATA_PATH.format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])


def video_file(root: Path, row: dict, video_key: str) -> Path:
    """The mp4 file of one camera that an episode row points at."""
    return root / VIDEO_PATH.format(
        video_key=video_key,
        chunk_index=row[f"videos/{video_key}/chunk_index"],
        file_index=row[f"videos/{video_key}/file_index"],
    )


def vector_column(table: pa.Table, key: str) -> np.ndarray:
    """A fixed-size-list column (action, observation.state) as a (rows, dim) array."""
    return np.asarray(table.column(key).combine_chunks().flatten()).reshape(table.num_rows, -1)


@dataclass
class DatasetSpec:
    """What a dataset holds: rates, shapes and cameras. Built from a recipe or read back from info.json."""

    fps: int
    num_arms: int = 1
    cameras: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (height, width)
    robot_type: str = "franka"
    codec: str = "h264"

    def __post_init__(self) -> None:
        self.cameras = {name: (int(hw[0]), int(hw[1])) for name, hw in self.cameras.items()}
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")

    @property
    def action_dim(self) -> int:
        return 7 * self.num_arms

    @property
    def state_dim(self) -> int:
        return 7 * self.num_arms

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
    def from_info(cls, info: dict) -> DatasetSpec:
        feats = info["features"]
        cams = {
            k[len(IMAGE_KEY_PREFIX) :]: (v["shape"][0], v["shape"][1])
            for k, v in feats.items()
            if v["dtype"] == "video" and k.startswith(IMAGE_KEY_PREFIX)
        }
        codec = next((v["info"]["video.codec"] for v in feats.values() if v["dtype"] == "video"), "h264")
        return cls(
            fps=int(info["fps"]),
            num_arms=feats["action"]["shape"][0] // 7,
            cameras=cams,
            robot_type=info.get("robot_type") or "franka",
            codec=codec if codec in CODECS else "h264",
        )
