"""Random access to a LeRobot v3.0 dataset, and torch Datasets of frames and training windows.

    reader = DatasetReader("data/stack_cans")
    reader.frame(100)                     # every camera's image at global frame 100, state, action, label
    windows = WindowDataset(reader, camera="front", future_frames=12, action_horizon=12)
    item = windows[100]
    item["video"]          # (13, 3, H, W) uint8: the current frame and the next 12 of the front camera
    item["action"]         # (12, A) float32: the next 12 actions, padded with the last at the episode end
    item["action_is_pad"]  # (12,) bool

Actions and states are loaded into memory once (they are small); video is decoded per request, each video
segment once per window.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from harmowam_core.data import format as fmt
from harmowam_core.data.video import decode_frames
from harmowam_core.data.writer import read_episode_rows, read_tasks
from harmowam_core.errors import DatasetError


class DatasetReader:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        info_path = self.root / fmt.INFO_PATH
        if not info_path.is_file():
            raise DatasetError(
                f"{self.root}: not a dataset (no meta/info.json); pass the directory of a HarmoWAM/LeRobot v3.0 dataset"
            )
        try:
            self.info = json.loads(info_path.read_text())
            self.spec = fmt.DatasetSpec.from_info(self.info)
        except (json.JSONDecodeError, KeyError, TypeError, IndexError) as err:
            raise DatasetError(f"{info_path}: not a LeRobot v3.0 info.json ({err.__class__.__name__}: {err})") from None
        if self.info.get("codebase_version") != fmt.CODEBASE_VERSION:
            raise DatasetError(
                f"{info_path}: codebase_version {self.info.get('codebase_version')!r}; expected "
                f"{fmt.CODEBASE_VERSION!r} (convert older datasets with LeRobot's converter)"
            )
        meta_path = self.root / fmt.HARMOWAM_META_PATH
        self.meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        self.episodes = read_episode_rows(self.root)
        self.tasks = read_tasks(self.root)
        self._load_frames()

    # ------------------------------------------------------------------ loading
    def _load_frames(self) -> None:
        actions, states, labels, task_idx = [], [], [], []
        for row in self.episodes:
            path = fmt.data_file(self.root, row)
            table = pq.read_table(path)
            n = table.num_rows
            if n != row["length"]:
                raise DatasetError(f"{path}: {n} frames but the episodes table says {row['length']}")
            actions.append(fmt.vector_column(table, "action"))
            states.append(fmt.vector_column(table, "observation.state"))
            task_idx.append(table.column("task_index").to_numpy())
            if fmt.LABEL_KEY in table.column_names:
                labels.append(table.column(fmt.LABEL_KEY).to_numpy().astype(np.int64))
            else:
                labels.append(np.full(n, -1, dtype=np.int64))
        a, s = self.spec.action_dim, self.spec.state_dim
        self.action = np.concatenate(actions).astype(np.float32) if actions else np.zeros((0, a), np.float32)
        self.state = np.concatenate(states).astype(np.float32) if states else np.zeros((0, s), np.float32)
        self.interaction = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        self.task_index = np.concatenate(task_idx) if task_idx else np.zeros(0, np.int64)
        self.lengths = np.array([r["length"] for r in self.episodes], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.episode_of = np.repeat(np.arange(len(self.episodes)), self.lengths)

    # ------------------------------------------------------------------ properties
    @property
    def fps(self) -> int:
        return self.spec.fps

    @property
    def cameras(self) -> list[str]:
        return list(self.spec.cameras)

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())

    @property
    def num_arms(self) -> int:
        return self.spec.num_arms

    @property
    def is_labelled(self) -> bool:
        return fmt.LABEL_KEY in self.info["features"]

    def stats(self) -> dict:
        path = self.root / fmt.STATS_PATH
        return json.loads(path.read_text()) if path.is_file() else {}

    def locate(self, index: int) -> tuple[int, int]:
        """Global frame index -> (episode index, frame index within the episode)."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} out of range for {self.num_frames} frames")
        ep = int(self.episode_of[index])
        return ep, int(index - self.starts[ep])

    def episode_slice(self, ep: int) -> slice:
        return slice(int(self.starts[ep]), int(self.starts[ep] + self.lengths[ep]))

    def video_path(self, ep: int, camera: str) -> Path:
        return fmt.video_file(self.root, self.episodes[ep], fmt.IMAGE_KEY_PREFIX + camera)

    def frames(self, ep: int, camera: str, frame_indices: list[int] | np.ndarray) -> np.ndarray:
        """(k, H, W, 3) uint8 frames of one episode's camera, decoded in one pass."""
        row = self.episodes[ep]
        start = int(round(row[f"videos/{fmt.IMAGE_KEY_PREFIX}{camera}/from_timestamp"] * self.fps))
        return decode_frames(self.video_path(ep, camera), frame_indices, self.fps, offset=start)

    # ------------------------------------------------------------------ random access
    def frame(self, index: int, cameras: list[str] | None = None) -> dict:
        ep, t = self.locate(index)
        out = {
            "index": index,
            "episode_index": ep,
            "frame_index": t,
            "action": self.action[index],
            "observation.state": self.state[index],
            "interaction": int(self.interaction[index]),
            "task": self.tasks[int(self.task_index[index])] if self.tasks else "",
        }
        for cam in cameras if cameras is not None else self.cameras:
            out[fmt.IMAGE_KEY_PREFIX + cam] = self.frames(ep, cam, [t])[0]
        return out

    def window(
        self,
        index: int,
        camera: str,
        future_frames: int,
        action_horizon: int,
        cameras: list[str] | None = None,
    ) -> dict:
        """The training window starting at global frame `index` (see module docstring)."""
        ep, t = self.locate(index)
        last = int(self.lengths[ep]) - 1
        video_idx = np.arange(t, t + future_frames + 1)
        act_idx = np.arange(t, t + action_horizon)
        sl = self.episode_slice(ep)
        out = self.frame(index, cameras=[c for c in (cameras if cameras is not None else self.cameras) if c != camera])
        video = self.frames(ep, camera, np.minimum(video_idx, last))  # one decode covers current + future
        out[fmt.IMAGE_KEY_PREFIX + camera] = video[0]
        out["video"] = video
        out["video_is_pad"] = video_idx > last
        out["action"] = self.action[sl][np.minimum(act_idx, last)]
        out["action_is_pad"] = act_idx > last
        out["future_interaction"] = self.interaction[sl][np.minimum(act_idx, last)]
        return out


def split_episodes(num_episodes: int, held_out: int) -> tuple[list[int], list[int]]:
    """Train / held-out episode indices: the last `held_out` episodes are held out (at least one trains)."""
    held_out = max(0, min(held_out, num_episodes - 1))
    cut = num_episodes - held_out
    return list(range(cut)), list(range(cut, num_episodes))


def _to_torch(item: dict) -> dict:
    out = {}
    for k, v in item.items():
        if isinstance(v, np.ndarray):
            if v.dtype == np.uint8 and v.ndim >= 3:  # (..., H, W, 3) -> (..., 3, H, W)
                v = np.moveaxis(v, -1, -3)
            out[k] = torch.from_numpy(np.ascontiguousarray(v))
        elif isinstance(v, (int, np.integer)):
            out[k] = torch.tensor(int(v))
        else:
            out[k] = v
    return out


class FrameDataset(Dataset):
    """Single frames: every camera (3, H, W) uint8, state, action, interaction label (-1 = unlabelled)."""

    def __init__(self, reader: DatasetReader, episodes: list[int] | None = None, cameras: list[str] | None = None):
        self.reader, self.cameras = reader, cameras
        eps = range(reader.num_episodes) if episodes is None else episodes
        self.indices = (
            np.concatenate([np.arange(reader.episode_slice(e).start, reader.episode_slice(e).stop) for e in eps])
            if len(eps)
            else np.zeros(0, np.int64)
        )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return _to_torch(self.reader.frame(int(self.indices[i]), self.cameras))


class WindowDataset(FrameDataset):
    """Training windows: current frames, the next `future_frames` of `camera`, the next `action_horizon` actions."""

    def __init__(
        self,
        reader: DatasetReader,
        camera: str,
        future_frames: int = 12,
        action_horizon: int = 12,
        episodes: list[int] | None = None,
        cameras: list[str] | None = None,
    ):
        super().__init__(reader, episodes, cameras)
        if camera not in reader.cameras:
            raise DatasetError(f"{reader.root}: no camera '{camera}'; it has {', '.join(reader.cameras)}")
        self.camera, self.future_frames, self.action_horizon = camera, future_frames, action_horizon

    def __getitem__(self, i: int) -> dict:
        item = self.reader.window(
            int(self.indices[i]), self.camera, self.future_frames, self.action_horizon, self.cameras
        )
        return _to_torch(item)
