import json

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harmowam_core.data.format import DatasetSpec
from harmowam_core.data.reader import DatasetReader, FrameDataset, WindowDataset, split_episodes
from harmowam_core.data.writer import DatasetWriter
from harmowam_core.errors import DatasetError

CODEC_TOLERANCE = 8.0  # mean absolute error in 8-bit levels, h264 yuv420p on smooth synthetic frames


def assert_reads_back(root, written: list) -> DatasetReader:
    """The dataset at `root` holds `written` (make_dataset's episodes): actions and states exactly, video
    within the codec's tolerance."""
    reader = DatasetReader(root)
    assert reader.num_episodes == len(written)
    for ep, (actions, states, frames) in enumerate(written):
        sl = reader.episode_slice(ep)
        np.testing.assert_array_equal(reader.action[sl], actions)
        np.testing.assert_array_equal(reader.state[sl], states)
        for cam, expected in frames.items():
            decoded = reader.frames(ep, cam, list(range(len(expected))))
            err = np.abs(decoded.astype(float) - np.stack(expected).astype(float)).mean()
            assert err < CODEC_TOLERANCE, (ep, cam, err)
    return reader


def test_round_trip_actions_states_exact_and_video_within_codec_tolerance(make_dataset):
    root, written = make_dataset(lengths=(12, 17, 9))
    reader = assert_reads_back(root, written)
    assert (reader.num_episodes, reader.num_frames) == (3, 38)
    item = reader.frame(13)  # episode 1, frame 1
    assert (item["episode_index"], item["frame_index"]) == (1, 1)
    np.testing.assert_array_equal(item["action"], written[1][0][1])


def test_layout_and_metadata_follow_lerobot_v3(make_dataset):
    root, _ = make_dataset(lengths=(10, 12))
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"], info["fps"]) == (2, 22, 1, 10)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert info["splits"] == {"train": "0:2"}
    feats = info["features"]
    assert feats["action"] == {"dtype": "float32", "shape": [7], "names": feats["action"]["names"]}
    assert feats["observation.images.front"]["dtype"] == "video"
    assert feats["observation.images.front"]["shape"] == [32, 48, 3]
    assert feats["observation.images.front"]["info"]["video.fps"] == 10
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert feats[key]["shape"] == [1]
    for ep in range(2):
        assert (root / f"data/chunk-000/file-{ep:03d}.parquet").is_file()
        assert (root / f"videos/observation.images.front/chunk-000/file-{ep:03d}.mp4").is_file()
    rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(r["episode_index"], r["length"], r["dataset_from_index"], r["dataset_to_index"]) for r in rows] == [
        (0, 10, 0, 10),
        (1, 12, 10, 22),
    ]
    assert rows[1]["videos/observation.images.front/to_timestamp"] == pytest.approx(1.2)
    assert rows[0]["tasks"] == ["stack the cans"] and rows[0]["stage_success"] == [True, True]
    data = pq.read_table(root / "data/chunk-000/file-001.parquet")
    assert data.column("index").to_pylist() == list(range(10, 22))
    assert data.column("timestamp").to_pylist() == pytest.approx([i / 10 for i in range(12)])
    action_type = data.schema.field("action").type
    assert pa.types.is_fixed_size_list(action_type) and action_type.list_size == 7
    assert action_type.value_type == pa.float32()
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.to_pydict() == {"task_index": [0], "task": ["stack the cans"]}
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]


def test_tasks_parquet_reads_in_pandas_with_task_as_index(make_dataset):
    pd = pytest.importorskip("pandas")
    root, _ = make_dataset(lengths=(5,))
    tasks = pd.read_parquet(root / "meta/tasks.parquet")
    assert tasks.index.name == "task" and tasks.loc["stack the cans", "task_index"] == 0


def test_stats_match_numpy_over_all_frames(make_dataset):
    root, written = make_dataset(lengths=(11, 6, 15))
    stats = json.loads((root / "meta/stats.json").read_text())
    actions = np.concatenate([w[0] for w in written]).astype(np.float64)
    for name, fn in (("min", np.min), ("max", np.max), ("mean", np.mean), ("std", np.std)):
        np.testing.assert_allclose(stats["action"][name], fn(actions, axis=0), rtol=1e-6, atol=1e-6)
    assert stats["action"]["count"] == [32]
    # Image stats: per channel in [0, 1] with LeRobot's (3, 1, 1) shape, from the frames as recorded.
    frames = np.concatenate([np.stack(w[2]["front"]) for w in written]).astype(np.float64) / 255
    img = stats["observation.images.front"]
    assert np.asarray(img["mean"]).shape == (3, 1, 1)
    np.testing.assert_allclose(np.asarray(img["mean"]).ravel(), frames.mean(axis=(0, 1, 2)), atol=1e-9)
    np.testing.assert_allclose(np.asarray(img["std"]).ravel(), frames.std(axis=(0, 1, 2)), atol=1e-9)
    np.testing.assert_allclose(stats["index"]["max"], [31])


def test_writing_again_appends(make_dataset):
    root, first = make_dataset(lengths=(8, 9))
    _, second = make_dataset(lengths=(7,), root=root)
    reader = DatasetReader(root)
    assert reader.num_episodes == 3 and reader.num_frames == 24
    np.testing.assert_array_equal(reader.action[reader.episode_slice(2)], second[0][0])
    info = json.loads((root / "meta/info.json").read_text())
    assert info["total_episodes"] == 3 and info["splits"] == {"train": "0:3"}


def test_append_with_other_cameras_or_task_is_refused(make_dataset, tmp_path):
    root, _ = make_dataset(lengths=(5,))
    with pytest.raises(DatasetError, match="cannot append"):
        DatasetWriter(root, DatasetSpec(fps=10, num_arms=1, cameras={"front": (64, 64)}))
    with pytest.raises(DatasetError, match="holds task 'stack_cans'"):
        DatasetWriter(root, task_name="flowers")


def test_second_writer_is_refused_while_one_holds_the_lock(make_dataset):
    root, _ = make_dataset(lengths=(5,))
    with DatasetWriter(root), pytest.raises(DatasetError, match="another process is writing"):
        DatasetWriter(root)
    DatasetWriter(root).close()  # released again


def test_discarded_episode_leaves_no_trace(make_dataset):
    root, _ = make_dataset(lengths=(5,))
    with DatasetWriter(root) as writer:
        with writer.episode("stack the cans") as ep:
            ep.add_frame(
                np.zeros(7),
                np.zeros(7),
                {"front": np.zeros((32, 48, 3), np.uint8), "wrist": np.zeros((16, 16, 3), np.uint8)},
            )
            ep.discard()
        with pytest.raises(ValueError, match="expected images for cameras"), writer.episode("x") as ep:
            ep.add_frame(np.zeros(7), np.zeros(7), {"front": np.zeros((32, 48, 3), np.uint8)})
    assert DatasetReader(root).num_episodes == 1
    assert sorted(p.name for p in (root / "data/chunk-000").iterdir()) == ["file-000.parquet"]
    assert not (root / ".staging").exists() or not any((root / ".staging").iterdir())


def test_window_dataset_shapes_padding_and_labels(make_dataset):
    root, written = make_dataset(lengths=(10, 20))
    reader = DatasetReader(root)
    windows = WindowDataset(reader, camera="front", future_frames=12, action_horizon=12)
    assert len(windows) == 30
    item = windows[5]  # episode 0, frame 5: 4 real future frames and 5 real actions remain
    assert item["video"].shape == (13, 3, 32, 48) and item["video"].dtype.__str__() == "torch.uint8"
    assert item["observation.images.wrist"].shape == (3, 16, 16)
    assert item["action"].shape == (12, 7)
    assert item["video_is_pad"].tolist() == [False] * 5 + [True] * 8
    assert item["action_is_pad"].tolist() == [False] * 5 + [True] * 7
    np.testing.assert_array_equal(item["action"][:5].numpy(), written[0][0][5:10])
    np.testing.assert_array_equal(item["action"][5:].numpy(), np.repeat(written[0][0][9:10], 7, 0))
    assert int(item["interaction"]) == -1  # unlabelled
    frames = FrameDataset(reader, episodes=[1])
    assert len(frames) == 20 and int(frames[0]["episode_index"]) == 1
    assert split_episodes(10, 2) == (list(range(8)), [8, 9])
    assert split_episodes(1, 3) == ([0], [])


def test_each_video_is_decoded_once_per_window(make_dataset, monkeypatch):
    root, _ = make_dataset(lengths=(30,))
    reader = DatasetReader(root)
    opened = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    WindowDataset(reader, camera="front", future_frames=12, action_horizon=12)[3]
    assert sorted(opened) == sorted(str(reader.video_path(0, c)) for c in ("front", "wrist"))


def test_reader_errors_are_clear(tmp_path):
    with pytest.raises(DatasetError, match="not a dataset"):
        DatasetReader(tmp_path)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta/info.json").write_text(
        '{"codebase_version": "v2.1", "fps": 10, "features": {"action": {"shape": [7], "dtype": "float32"}}}'
    )
    with pytest.raises(DatasetError, match="expected 'v3.0'"):
        DatasetReader(tmp_path)


def test_dual_arm_dataset_names_both_arms(make_dataset):
    root, _ = make_dataset(lengths=(6,), num_arms=2, cameras={"global": (16, 16)})
    info = json.loads((root / "meta/info.json").read_text())
    assert info["features"]["action"]["shape"] == [14]
    assert info["features"]["action"]["names"][0] == "left_dx" and info["features"]["action"]["names"][7] == "right_dx"
    assert DatasetReader(root).num_arms == 2


def test_loads_in_lerobot(make_dataset):
    """The dataset loads in LeRobot's own LeRobotDataset, where LeRobot is installed."""
    lerobot_dataset = pytest.importorskip("lerobot.datasets.lerobot_dataset")
    root, written = make_dataset(lengths=(8, 6))
    ds = lerobot_dataset.LeRobotDataset("local/harmowam_test", root=root, video_backend="pyav")
    assert ds.num_episodes == 2 and ds.num_frames == 14
    item = ds[9]
    np.testing.assert_allclose(item["action"].numpy(), written[1][0][1])
    assert tuple(item["observation.images.front"].shape) == (3, 32, 48)


def test_appending_to_a_dataset_without_harmowam_metadata(make_dataset):
    root, _ = make_dataset(lengths=(5,))
    (root / "meta/harmowam.json").unlink()  # as in a dataset LeRobot wrote
    make_dataset(lengths=(4,), root=root)
    assert DatasetReader(root).num_episodes == 2
    assert json.loads((root / "meta/harmowam.json").read_text())["arms"] == 1
