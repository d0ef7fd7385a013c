"""Random access to a LeRobot v3.0 dataset, and torch Datasets of frames and training windows.

    reader = DatasetReader("data/stack_cans")              # or "lerobot/svla_so101_pickplace": the local HF cache
    reader.frame(100)                     # every camera's image at global frame 100, state, action, label
    windows = WindowDataset(reader, camera="front", future_frames=12, action_horizon=12)
    item = windows[100]
    item["video"]          # (13, 3, H, W) uint8: the current frame and the next 12 of the front camera
    item["action"]         # (12, A) float32: the next 12 actions, padded with the last at the episode end
    item["action_is_pad"]  # (12,) bool

Any v3.0 dataset reads, HarmoWAM's or LeRobot's (see `format`): episodes are sliced out of shared data files by
the episodes table and out of shared video files by their from/to timestamps; a `DataMapping` (a recipe's
`data:` section) says which features are the cameras, the state and the action. Actions and states are loaded
into memory once (they are small); video is decoded per request, each video segment once per window; image
features stored as PNG bytes in the data files are read per file and decoded per frame.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from harmowam_core.data import format as fmt
from harmowam_core.data.meta import finish_commit, read_episode_rows, read_harmowam_meta, read_tasks
from harmowam_core.data.video import decode_frames, video_duration
from harmowam_core.data.windows import window
from harmowam_core.errors import DatasetError

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def lerobot_home() -> Path:
    """LeRobot's local dataset cache: $HF_LEROBOT_HOME, else $HF_HOME/lerobot, else ~/.cache/huggingface/lerobot
    (where `LeRobotDataset("owner/name")` and `huggingface-cli download` leave datasets)."""
    if os.environ.get("HF_LEROBOT_HOME"):
        return Path(os.environ["HF_LEROBOT_HOME"]).expanduser()
    hf_home = Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser()
    return hf_home / "lerobot"


def resolve_dataset(ref: str | Path) -> Path:
    """A dataset directory: `ref` itself where it holds one, else, for a hub id `owner/name`, the copy in the
    local LeRobot cache (`lerobot_home() / owner / name`). Nothing is downloaded. Raises DatasetError saying
    where it looked."""
    path = Path(ref).expanduser()
    if (path / fmt.INFO_PATH).is_file():
        return path
    text = str(ref)
    if not path.is_absolute() and HUB_ID.fullmatch(text):
        cached = lerobot_home() / text
        if (cached / fmt.INFO_PATH).is_file():
            return cached
        raise DatasetError(
            f"{text}: no dataset there nor in the local LeRobot cache ({cached}; set HF_LEROBOT_HOME to look "
            "elsewhere); nothing is downloaded: fetch it first, e.g. `huggingface-cli download --repo-type dataset "
            f"{text} --local-dir {cached}`"
        )
    if path.is_dir():
        raise DatasetError(
            f"{path}: not a dataset (no meta/info.json); pass the directory of a HarmoWAM/LeRobot v3.0 dataset"
        )
    raise DatasetError(
        f"{path}: not a dataset (no such directory); pass the directory of a HarmoWAM/LeRobot v3.0 dataset"
    )


def read_info(root: Path) -> dict:
    """meta/info.json of a v3.0 dataset. Raises DatasetError for another version, a malformed file, or a path it
    names that could lie outside the dataset: a camera feature key that is not one path component, a
    `data_path` / `video_path` template other than LeRobot's kind (`format.check_template`)."""
    info_path = root / fmt.INFO_PATH
    try:
        info = json.loads(info_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{info_path}: not a readable info.json ({err.__class__.__name__}: {err})") from None
    if not isinstance(info, dict):
        raise DatasetError(f"{info_path}: not a LeRobot v3.0 info.json (not a mapping)")
    if info.get("codebase_version") != fmt.CODEBASE_VERSION:
        raise DatasetError(
            f"{info_path}: codebase_version {info.get('codebase_version')!r}; expected "
            f"{fmt.CODEBASE_VERSION!r} (convert older datasets with LeRobot's converter)"
        )
    missing = [k for k in ("fps", "features") if k not in info]
    if missing or not isinstance(info["features"], dict):
        raise DatasetError(f"{info_path}: not a LeRobot v3.0 info.json (no {' or '.join(missing) or 'features'})")
    for key, feature in info["features"].items():
        if isinstance(feature, dict) and feature.get("dtype") in fmt.CAMERA_DTYPES:
            fmt.safe_name(key, f"{info_path}: camera feature key")
    for key in ("data_path", "video_path"):
        if info.get(key) is not None:
            fmt.check_template(info[key], key, str(info_path))
    return info


def _vector(table: pa.Table, key: str, path: Path) -> np.ndarray:
    """A numeric column (fixed-size list or scalar) as a (rows, dim) float32 array."""
    column = table.column(key).combine_chunks()
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) or pa.types.is_large_list(column.type):
        values = np.asarray(column.flatten().to_numpy(zero_copy_only=False))
        if table.num_rows and values.size % table.num_rows:
            raise DatasetError(f"{path}: column '{key}' has rows of different lengths")
        return values.reshape(table.num_rows, -1).astype(np.float32)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, 1)


class DatasetReader:
    """One dataset, read for training and labelling.

    root: a dataset directory or a hub id `owner/name` in the local LeRobot cache (`resolve_dataset`).
    mapping: which features are the cameras, action and state (default: HarmoWAM's names, every camera).

    Attributes (global frame order, episode after episode): action (N, A) and state (N, S) float32, the mapped
    features at the dataset's own dimensions; interaction (N,) int64 (-1 unlabelled); task_index (N,) int64;
    detour (N,) bool, the frames whose actions are not the expert's: its recovery detours and a learned
    policy's steps before a takeover (episode rows' `detours`; none in a dataset without them); lengths /
    starts (E,) int64. Raises DatasetError, one line naming the file, for a dataset that is not v3.0, a missing
    file, frame counts that disagree with the episodes table, a video shorter than its episode, detours outside
    their episode or a mapping that names a feature the dataset lacks.
    """

    def __init__(self, root: str | Path, mapping: fmt.DataMapping | None = None):
        self.root = resolve_dataset(root)
        finish_commit(self.root)  # a labeller killed while renaming its files: complete it (all new labels)
        self.info = read_info(self.root)
        self.mapping = mapping or fmt.DataMapping()
        self.meta = read_harmowam_meta(self.root)
        self.episodes = read_episode_rows(self.root)
        if not self.episodes and int(self.info.get("total_episodes") or 0) > 0:
            raise DatasetError(
                f"{self.root / 'meta/episodes'}: no episodes table, but info.json counts "
                f"{self.info['total_episodes']} episodes (a recording that did not finish: LeRobot writes it when "
                "the recording is finalised)"
            )
        self.tasks = read_tasks(self.root)
        # the dataset's own path templates (read_info checked them), LeRobot's where it names none
        self.data_template = self.info.get("data_path") or fmt.DATA_PATH
        self.video_template = self.info.get("video_path") or fmt.VIDEO_PATH
        self._images: tuple[Path, str, list] | None = None  # the last data file's image column read
        self._resolve_features()
        self._load_frames()
        self._check_videos()

    # ------------------------------------------------------------------ features
    def _resolve_features(self) -> None:
        feats, where = self.info["features"], self.root / fmt.INFO_PATH
        cameras = {fmt.camera_name(k): k for k, v in feats.items() if v.get("dtype") in fmt.CAMERA_DTYPES}
        if self.mapping.cameras:
            for name, key in self.mapping.cameras.items():
                if feats.get(key, {}).get("dtype") not in fmt.CAMERA_DTYPES:
                    raise DatasetError(
                        f"{where}: data.cameras maps '{name}' to '{key}', not an image or video feature of the "
                        f"dataset; it has {', '.join(cameras.values()) or 'none'}"
                    )
            cameras = dict(self.mapping.cameras)
        self.camera_keys: dict[str, str] = cameras  # our camera name -> feature key
        for part, key in (("action", self.mapping.action), ("state", self.mapping.state)):
            ft = feats.get(key)
            if ft is None or ft.get("dtype") in fmt.CAMERA_DTYPES + ("string",) or len(ft.get("shape") or ()) != 1:
                numeric = [
                    k for k, v in feats.items() if len(v.get("shape") or ()) == 1 and k not in fmt.DEFAULT_FEATURES
                ]
                raise DatasetError(
                    f"{where}: no vector feature '{key}' for the {part} (set data.{part} to one of "
                    f"{', '.join(numeric) or 'none'})"
                )
        shapes = {name: feats[key]["shape"] for name, key in cameras.items()}
        bad = [name for name, shape in shapes.items() if len(shape) != 3]
        if bad:
            raise DatasetError(f"{where}: camera feature '{cameras[bad[0]]}' has shape {shapes[bad[0]]}, not (H, W, 3)")
        hw = {}
        for name, key in cameras.items():
            shape = list(feats[key]["shape"])
            names = feats[key].get("names") or []
            if shape[0] == 3 and (list(names[:1]) == ["channels"] or shape[-1] != 3):  # stored (3, H, W)
                shape = shape[1:] + shape[:1]
            hw[name] = (shape[0], shape[1])
        arms = self.meta.get("arms")
        spec = fmt.DatasetSpec.from_info(self.info, arms=arms)
        self.spec = fmt.DatasetSpec(
            fps=spec.fps,
            num_arms=spec.num_arms,
            cameras=hw,
            robot_type=spec.robot_type,
            codec=spec.codec,
            action_dim=int(feats[self.mapping.action]["shape"][0]),
            state_dim=int(feats[self.mapping.state]["shape"][0]),
        )

    @property
    def native_actions(self) -> bool:
        """True when the action is not HarmoWAM's 7 numbers per arm (dx, dy, dz, droll, dpitch, dyaw, gripper):
        a dataset recorded elsewhere, learnt as it is and deployable only where that action space runs."""
        ft = self.info["features"][self.mapping.action]
        ours = [p + n for p in fmt.arm_prefixes(self.spec.num_arms) for n in fmt.ARM_ACTION_NAMES]
        return not (self.spec.action_dim == 7 * self.spec.num_arms and list(ft.get("names") or ours) == ours)

    def camera_codec(self, camera: str) -> str:
        """The camera's codec as info.json records it ("h264", "av1", ...), or "image" for PNG frames."""
        ft = self.info["features"][self.camera_keys[camera]]
        if ft["dtype"] == "image":
            return "image"
        return (ft.get("info") or {}).get("video.codec") or "unknown"

    # ------------------------------------------------------------------ loading
    def _load_frames(self) -> None:
        """Read the mapped columns of every data file once and cut them into episodes by the episodes table."""
        key_a, key_s = self.mapping.action, self.mapping.state
        by_file: dict[Path, list[int]] = {}
        for ep, row in enumerate(self.episodes):
            by_file.setdefault(fmt.data_file(self.root, row, self.data_template), []).append(ep)
        parts: dict[int, dict[str, np.ndarray]] = {}
        self._file_rows: dict[int, tuple[Path, int]] = {}  # episode -> (data file, first row in it)
        for path, eps in by_file.items():
            if not path.is_file():
                raise DatasetError(
                    f"{path}: missing (the data file of episode {self.episodes[eps[0]]['episode_index']})"
                )
            names = pq.read_schema(path).names
            wanted = [k for k in (key_a, key_s, "task_index", "episode_index", fmt.LABEL_KEY) if k in names]
            for key in (key_a, key_s):
                if key not in names:
                    raise DatasetError(f"{path}: no column '{key}' (info.json lists it as a feature)")
            table = pq.read_table(path, columns=wanted)
            if "episode_index" in names:
                column = table.column("episode_index").to_numpy()
            else:  # one episode per file, as HarmoWAM's oldest datasets
                column = np.full(table.num_rows, self.episodes[eps[0]]["episode_index"], dtype=np.int64)
            action, state = _vector(table, key_a, path), _vector(table, key_s, path)
            task = table.column("task_index").to_numpy() if "task_index" in names else np.zeros(table.num_rows, int)
            labels = table.column(fmt.LABEL_KEY).to_numpy() if fmt.LABEL_KEY in names else None
            for ep in eps:
                row = self.episodes[ep]
                index = row["episode_index"]
                rows = np.flatnonzero(column == index)
                n = int(row["length"])
                if rows.size != n:
                    raise DatasetError(
                        f"{path}: episode {index} has {rows.size} frames but the episodes table says {n}"
                    )
                lo, hi = row.get("dataset_from_index"), row.get("dataset_to_index")
                if lo is not None and hi is not None and hi - lo != n:
                    raise DatasetError(
                        f"{self.root / 'meta/episodes'}: episode {index} spans frames {lo}-{hi} "
                        f"({hi - lo}) but its length is {n}"
                    )
                if n and rows[-1] - rows[0] + 1 != n:
                    raise DatasetError(f"{path}: the frames of episode {index} are not contiguous")
                self._file_rows[ep] = (path, int(rows[0]) if n else 0)
                sl = slice(int(rows[0]), int(rows[0]) + n) if n else slice(0, 0)
                parts[ep] = {
                    "action": action[sl],
                    "state": state[sl],
                    "task": task[sl].astype(np.int64),
                    "label": labels[sl].astype(np.int64) if labels is not None else np.full(n, -1, np.int64),
                }
        order = [parts[ep] for ep in range(len(self.episodes))]
        a, s = self.spec.action_dim, self.spec.state_dim
        self.action = np.concatenate([p["action"] for p in order]) if order else np.zeros((0, a), np.float32)
        self.state = np.concatenate([p["state"] for p in order]) if order else np.zeros((0, s), np.float32)
        self.interaction = np.concatenate([p["label"] for p in order]) if order else np.zeros(0, np.int64)
        self.task_index = np.concatenate([p["task"] for p in order]) if order else np.zeros(0, np.int64)
        if self.task_index.size and self.tasks and int(self.task_index.max()) >= len(self.tasks):
            raise DatasetError(
                f"{self.root / fmt.TASKS_PATH}: {len(self.tasks)} task(s), but frames use task_index "
                f"{int(self.task_index.max())}"
            )
        self.lengths = np.array([r["length"] for r in self.episodes], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.episode_of = np.repeat(np.arange(len(self.episodes)), self.lengths)
        masks = []
        for row in self.episodes:
            try:
                masks.append(fmt.runs_mask(row.get(fmt.DETOURS_KEY), int(row["length"])))
            except DatasetError as err:
                raise DatasetError(f"{self.root / 'meta/episodes'}: episode {row['episode_index']}: {err}") from None
        self.detour = np.concatenate(masks) if masks else np.zeros(0, dtype=bool)

    def _check_videos(self) -> None:
        """Every video file exists and is as long as the last episode it holds."""
        for name, key in self.camera_keys.items():
            if self.info["features"][key]["dtype"] != "video":
                continue
            ends: dict[Path, tuple[float, int]] = {}
            for ep, row in enumerate(self.episodes):
                if row.get(f"videos/{key}/chunk_index") is None:
                    raise DatasetError(
                        f"{self.root / 'meta/episodes'}: episode {row['episode_index']} has no video of '{key}'"
                    )
                path = self.video_path(ep, name)
                end = float(row[f"videos/{key}/to_timestamp"])
                if path not in ends or end > ends[path][0]:
                    ends[path] = (end, row["episode_index"])
            for path, (end, index) in ends.items():
                if not path.is_file():
                    raise DatasetError(f"{path}: missing (the '{key}' video of episode {index})")
                duration = video_duration(path)
                if duration is not None and duration + 1.0 / self.fps < end - 1e-6:
                    raise DatasetError(
                        f"{path}: the video lasts {duration:.3f} s but episode {index} ends at {end:.3f} s"
                    )

    # ------------------------------------------------------------------ properties
    @property
    def fps(self) -> int:
        return self.spec.fps

    @property
    def cameras(self) -> list[str]:
        return list(self.camera_keys)

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
        return fmt.video_file(self.root, self.episodes[ep], self.camera_keys[camera], self.video_template)

    def frames(self, ep: int, camera: str, frame_indices: list[int] | np.ndarray) -> np.ndarray:
        """(k, H, W, 3) uint8 frames of one episode's camera, decoded in one pass (a video) or from the PNG bytes
        of the data file (an image feature). Raises DatasetError when a video ends before a requested frame."""
        key = self.camera_keys[camera]
        if self.info["features"][key]["dtype"] == "image":
            return self._image_frames(ep, key, frame_indices)
        row = self.episodes[ep]
        start = int(round(row[f"videos/{key}/from_timestamp"] * self.fps))
        path = self.video_path(ep, camera)
        try:
            return decode_frames(path, frame_indices, self.fps, offset=start)
        except IndexError as err:
            raise DatasetError(
                f"{err}: the video is shorter than episode {row['episode_index']} ({row['length']} frames from "
                f"{row[f'videos/{key}/from_timestamp']:.3f} s)"
            ) from None

    def _image_frames(self, ep: int, key: str, frame_indices) -> np.ndarray:
        from PIL import Image

        path, first = self._file_rows[ep]
        if self._images is None or self._images[:2] != (path, key):
            column = pq.read_table(path, columns=[key]).column(key).combine_chunks()
            cells = column.field("bytes").to_pylist() if pa.types.is_struct(column.type) else column.to_pylist()
            paths = column.field("path").to_pylist() if pa.types.is_struct(column.type) else [None] * len(cells)
            self._images = (path, key, list(zip(cells, paths, strict=True)))
        cells = self._images[2]
        out = []
        for t in np.asarray(frame_indices, dtype=np.int64):
            data, name = cells[first + int(t)]
            if data is None:  # a file beside the data, by a path the dataset names: inside it only
                source = fmt.inside(self.root, str(name), f"{path}: frame {int(t)} of episode {ep} in '{key}'")
            else:
                source = io.BytesIO(data)
            try:
                out.append(np.asarray(Image.open(source).convert("RGB")))
            except (OSError, ValueError) as err:
                raise DatasetError(
                    f"{path}: frame {int(t)} of episode {ep} in '{key}' is not an image ({err})"
                ) from None
        return np.stack(out)

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
        video_idx, video_is_pad = window(t, int(self.lengths[ep]), future_frames + 1)
        act_idx, action_is_pad = window(t, int(self.lengths[ep]), action_horizon)
        sl = self.episode_slice(ep)
        out = self.frame(index, cameras=[c for c in (cameras if cameras is not None else self.cameras) if c != camera])
        video = self.frames(ep, camera, video_idx)  # one decode covers current + future
        out[fmt.IMAGE_KEY_PREFIX + camera] = video[0]
        out["video"] = video
        out["video_is_pad"] = video_is_pad
        out["action"] = self.action[sl][act_idx]
        out["action_is_pad"] = action_is_pad | self.detour[sl][act_idx]  # a recovery detour's are not the expert's
        out["future_interaction"] = self.interaction[sl][act_idx]
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
