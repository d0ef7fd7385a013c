"""A dataset laid out the way LeRobot 0.4 writes one, written here without LeRobot and without our writer.

Following LeRobot v3.0 (lerobot/datasets/lerobot_dataset.py, utils.py, compute_stats.py at v0.4.4):
- several episodes share a data file and a video file; each episodes-table row gives its frames as
  `dataset_from_index`/`dataset_to_index` and its video segment as `from_timestamp`/`to_timestamp` (the
  duration of the file before it), and files roll over to `file-001`;
- `meta/tasks.parquet` is a pandas DataFrame whose unnamed index is the task string (`__index_level_0__`);
- the episodes table is split over two files, as LeRobot's metadata buffer flushes it;
- an image feature is stored in the data files as a struct of PNG bytes and a path (HF `datasets.Image`);
- stats hold min/max/mean/std/count and q01/q10/q50/q90/q99, images as (3, 1, 1) in [0, 1];
- a 6-number action and state (an SO-101's joint positions, gripper last) and an extra feature no mapping uses.
"""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

JOINTS = ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos", "wrist_flex.pos", "wrist_roll.pos", "gripper.pos"]
TASKS = ["pick the cube", "place it in the bowl"]
VIDEO_KEY, IMAGE_KEY, EXTRA_KEY = "observation.images.laptop", "observation.images.phone", "complementary_info.penalty"
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def frame(t: int, ep: int, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    r = 128 + 90 * np.sin(xx / 7.0 + t / 4.0 + ep)
    g = 128 + 90 * np.cos(yy / 6.0 - t / 5.0)
    b = 128 + 60 * np.sin((xx + yy) / 11.0 + t / 3.0)
    return np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)


def _stats(x: np.ndarray, image: bool = False) -> dict:
    if image:  # (T, H, W, 3) uint8 -> per channel (3, 1, 1) in [0, 1]
        flat = x.reshape(-1, 3).astype(np.float64) / 255.0
        out = {"min": flat.min(0), "max": flat.max(0), "mean": flat.mean(0), "std": flat.std(0)}
        out.update({k: np.quantile(flat, q, axis=0) for k, q in QUANTILES.items()})
        out = {k: v.reshape(3, 1, 1).tolist() for k, v in out.items()}
        out["count"] = [int(x.shape[0])]
        return out
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
    out.update({k: np.quantile(x, q, axis=0) for k, q in QUANTILES.items()})
    out = {k: v.tolist() for k, v in out.items()}
    out["count"] = [int(x.shape[0])]
    return out


def _aggregate(per_episode: list[dict]) -> dict:
    counts = np.array([s["count"][0] for s in per_episode], dtype=np.float64)
    w = counts / counts.sum()
    mean = sum(wi * np.array(s["mean"]) for wi, s in zip(w, per_episode, strict=True))
    var = sum(
        wi * (np.array(s["std"]) ** 2 + (np.array(s["mean"]) - mean) ** 2) for wi, s in zip(w, per_episode, strict=True)
    )
    out = {
        "min": np.min([s["min"] for s in per_episode], 0).tolist(),
        "max": np.max([s["max"] for s in per_episode], 0).tolist(),
        "mean": mean.tolist(),
        "std": np.sqrt(var).tolist(),
        "count": [int(counts.sum())],
    }
    for k in QUANTILES:
        out[k] = sum(wi * np.array(s[k]) for wi, s in zip(w, per_episode, strict=True)).tolist()
    return out


def _encode(path: Path, frames: list[np.ndarray], fps: int, codec: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        options = {"g": "2", "crf": "30", "preset": "10"} if codec == "av1" else {"g": "2", "crf": "18"}
        stream = container.add_stream({"av1": "libsvtav1", "h264": "libx264"}[codec], rate=fps, options=options)
        h, w = frames[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            for packet in stream.encode(f):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_lerobot_dataset(
    root: Path,
    lengths=(14, 16, 12, 18, 15),
    fps: int = 10,
    codec: str = "av1",
    data_files=((0, 1, 2), (3, 4)),
    video_files=((0, 1), (2, 3, 4)),
    episode_files=((0, 1, 2), (3, 4)),
    video_hw=(64, 64),
    image_hw=(32, 32),
) -> dict:
    """Write the dataset; returns what was written: {"actions": [(T, 6)], "states": [...], "video": [[frames]],
    "images": [[frames]], "tasks": [per-frame task index arrays]}."""
    root = Path(root)
    rng = np.random.default_rng(0)
    written: dict = {"actions": [], "states": [], "video": [], "images": [], "tasks": []}
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for ep, n in enumerate(lengths):
        actions = rng.normal(size=(n, 6)).astype(np.float32) * 10
        actions[:, 5] = np.where((np.arange(n) // 5) % 2 == 0, 5.0, 40.0)  # the gripper opens and closes
        written["actions"].append(actions)
        written["states"].append((actions + rng.normal(size=(n, 6)) * 0.5).astype(np.float32))
        written["video"].append([frame(t, ep, *video_hw) for t in range(n)])
        written["images"].append([frame(t, ep + 10, *image_hw) for t in range(n)])
        tasks = np.zeros(n, dtype=np.int64)
        if ep == 1:
            tasks[n // 2 :] = 1  # two tasks in one episode
        written["tasks"].append(tasks)

    rows: dict[int, dict] = {}
    for file_index, eps in enumerate(data_files):
        columns: dict[str, list] = {k: [] for k in ("action", "observation.state", IMAGE_KEY, EXTRA_KEY)}
        columns.update({k: [] for k in ("timestamp", "frame_index", "episode_index", "index", "task_index")})
        for ep in eps:
            n = lengths[ep]
            for t in range(n):
                buf = io.BytesIO()
                Image.fromarray(written["images"][ep][t]).save(buf, format="PNG")
                columns["action"].append(written["actions"][ep][t].tolist())
                columns["observation.state"].append(written["states"][ep][t].tolist())
                columns[IMAGE_KEY].append({"bytes": buf.getvalue(), "path": f"frame-{t:06d}.png"})
                columns[EXTRA_KEY].append(0.0)
                columns["timestamp"].append(t / fps)
                columns["frame_index"].append(t)
                columns["episode_index"].append(ep)
                columns["index"].append(int(starts[ep]) + t)
                columns["task_index"].append(int(written["tasks"][ep][t]))
            rows[ep] = {
                "episode_index": ep,
                "tasks": sorted({TASKS[i] for i in written["tasks"][ep]}),
                "length": n,
                "data/chunk_index": 0,
                "data/file_index": file_index,
                "dataset_from_index": int(starts[ep]),
                "dataset_to_index": int(starts[ep]) + n,
            }
        table = pa.table(
            {
                "action": pa.array(columns["action"], pa.list_(pa.float32(), 6)),
                "observation.state": pa.array(columns["observation.state"], pa.list_(pa.float32(), 6)),
                IMAGE_KEY: pa.array(columns[IMAGE_KEY], pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                EXTRA_KEY: pa.array(columns[EXTRA_KEY], pa.float32()),
                "timestamp": pa.array(columns["timestamp"], pa.float32()),
                "frame_index": pa.array(columns["frame_index"], pa.int64()),
                "episode_index": pa.array(columns["episode_index"], pa.int64()),
                "index": pa.array(columns["index"], pa.int64()),
                "task_index": pa.array(columns["task_index"], pa.int64()),
            }
        )
        hf = {"info": {"features": {IMAGE_KEY: {"_type": "Image"}}}}
        table = table.replace_schema_metadata({b"huggingface": json.dumps(hf).encode()})
        path = root / f"data/chunk-000/file-{file_index:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="snappy")

    for file_index, eps in enumerate(video_files):
        offset = 0.0
        for ep in eps:
            n = lengths[ep]
            rows[ep][f"videos/{VIDEO_KEY}/chunk_index"] = 0
            rows[ep][f"videos/{VIDEO_KEY}/file_index"] = file_index
            rows[ep][f"videos/{VIDEO_KEY}/from_timestamp"] = offset
            rows[ep][f"videos/{VIDEO_KEY}/to_timestamp"] = offset + n / fps
            offset += n / fps
        frames = [f for ep in eps for f in written["video"][ep]]
        _encode(root / f"videos/{VIDEO_KEY}/chunk-000/file-{file_index:03d}.mp4", frames, fps, codec)

    per_episode = {}
    for ep, n in enumerate(lengths):
        st = {
            "action": _stats(written["actions"][ep]),
            "observation.state": _stats(written["states"][ep]),
            VIDEO_KEY: _stats(np.stack(written["video"][ep]), image=True),
            IMAGE_KEY: _stats(np.stack(written["images"][ep]), image=True),
            EXTRA_KEY: _stats(np.zeros(n)),
            "timestamp": _stats(np.arange(n) / fps),
            "frame_index": _stats(np.arange(n)),
            "episode_index": _stats(np.full(n, ep)),
            "index": _stats(starts[ep] + np.arange(n)),
            "task_index": _stats(written["tasks"][ep]),
        }
        per_episode[ep] = st
        for key, values in st.items():
            for name, v in values.items():
                rows[ep][f"stats/{key}/{name}"] = v
    for file_index, eps in enumerate(episode_files):
        for ep in eps:
            rows[ep]["meta/episodes/chunk_index"] = 0
            rows[ep]["meta/episodes/file_index"] = file_index
        path = root / f"meta/episodes/chunk-000/file-{file_index:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([rows[ep] for ep in eps]).to_parquet(path)

    pd.DataFrame({"task_index": range(len(TASKS))}, index=TASKS).to_parquet(root / "meta/tasks.parquet")
    stats = {key: _aggregate([per_episode[ep][key] for ep in range(len(lengths))]) for key in per_episode[0]}
    (root / "meta/stats.json").write_text(json.dumps(stats, indent=4))
    h, w = video_hw
    scalar = {"shape": [1], "names": None}
    info = {
        "codebase_version": "v3.0",
        "robot_type": "so101_follower",
        "total_episodes": len(lengths),
        "total_frames": int(sum(lengths)),
        "total_tasks": len(TASKS),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": fps,
        "splits": {"train": f"0:{len(lengths)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {
            "action": {"dtype": "float32", "shape": [6], "names": JOINTS},
            "observation.state": {"dtype": "float32", "shape": [6], "names": JOINTS},
            VIDEO_KEY: {
                "dtype": "video",
                "shape": [h, w, 3],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": h,
                    "video.width": w,
                    "video.codec": codec,
                    "video.pix_fmt": "yuv420p",
                    "video.is_depth_map": False,
                    "video.fps": fps,
                    "video.channels": 3,
                    "has_audio": False,
                },
            },
            IMAGE_KEY: {"dtype": "image", "shape": [*image_hw, 3], "names": ["height", "width", "channels"]},
            EXTRA_KEY: {"dtype": "float32", **scalar},
            "timestamp": {"dtype": "float32", **scalar},
            "frame_index": {"dtype": "int64", **scalar},
            "episode_index": {"dtype": "int64", **scalar},
            "index": {"dtype": "int64", **scalar},
            "task_index": {"dtype": "int64", **scalar},
        },
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    return written
