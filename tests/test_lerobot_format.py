"""LeRobot both ways (issue 20): datasets LeRobot 0.4 lays out read, label and train here; ours carry LeRobot's
quantile stats and load in LeRobot (where it is importable)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from lerobot_layout import EXTRA_KEY, IMAGE_KEY, TASKS, VIDEO_KEY, write_lerobot_dataset
from typer.testing import CliRunner

from harmowam_cli.main import app
from harmowam_core.data.format import DataMapping
from harmowam_core.data.meta import read_tasks
from harmowam_core.data.reader import DatasetReader, WindowDataset
from harmowam_core.data.stats import QUANTILE_NAMES
from harmowam_core.data.windows import ClipDataset
from harmowam_core.errors import DatasetError

runner = CliRunner()
MAPPING = [
    "--set",
    f"data.cameras.front={VIDEO_KEY}",
    "--set",
    f"data.cameras.wrist={IMAGE_KEY}",
]
VIDEO_TOLERANCE = 8.0  # mean absolute error in 8-bit levels on smooth synthetic frames


@pytest.fixture(params=["av1", "h264"])
def so101(tmp_path, request):
    root = tmp_path / "so101"
    return root, write_lerobot_dataset(root, codec=request.param)


def one_line_error(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], result.output


def test_reader_slices_shared_rolled_over_files_by_the_episodes_table(so101):
    root, written = so101
    reader = DatasetReader(root)
    assert (reader.num_episodes, reader.num_frames, reader.fps) == (5, 75, 10)
    assert reader.cameras == ["laptop", "phone"] and reader.num_arms == 1
    assert (reader.spec.action_dim, reader.spec.state_dim) == (6, 6) and reader.native_actions
    assert reader.tasks == TASKS  # stored as the unnamed pandas index
    for ep in range(5):
        sl = reader.episode_slice(ep)
        np.testing.assert_array_equal(reader.action[sl], written["actions"][ep])
        np.testing.assert_array_equal(reader.state[sl], written["states"][ep])
        np.testing.assert_array_equal(reader.task_index[sl], written["tasks"][ep])  # two tasks in episode 1
        video = reader.frames(ep, "laptop", np.arange(reader.lengths[ep]))
        assert np.abs(video.astype(float) - np.stack(written["video"][ep])).mean() < VIDEO_TOLERANCE
        np.testing.assert_array_equal(reader.frames(ep, "phone", [0, 5]), np.stack(written["images"][ep])[[0, 5]])
    assert (reader.interaction == -1).all() and not reader.is_labelled


def test_a_mapping_names_cameras_action_and_state(so101):
    root, _ = so101
    reader = DatasetReader(root, DataMapping(cameras={"front": VIDEO_KEY}))
    assert reader.cameras == ["front"] and reader.spec.cameras == {"front": (64, 64)}
    with pytest.raises(DatasetError, match="not an image or video feature"):
        DatasetReader(root, DataMapping(cameras={"front": "observation.images.nope"}))
    with pytest.raises(DatasetError, match="no vector feature 'observation.joints'"):
        DatasetReader(root, DataMapping(state="observation.joints"))


def test_info_shows_the_mapping_and_what_is_unmapped(so101):
    root, _ = so101
    out = runner.invoke(app, ["info", str(root), "--recipe", "stack_cans", *MAPPING, "--json"])
    assert out.exit_code == 0, out.output
    s = json.loads(out.output)
    assert (s["episodes"], s["frames"], s["arms"]) == (5, 75, 1)
    assert s["mapping"]["cameras"] == {"front": VIDEO_KEY, "wrist": IMAGE_KEY}
    assert s["mapping"]["action"] == {"key": "action", "dim": 6} and s["mapping"]["action_space"] == "native"
    assert s["cameras"]["wrist"]["codec"] == "image" and s["unmapped"] == [EXTRA_KEY]
    text = runner.invoke(app, ["info", str(root)])
    assert text.exit_code == 0, text.output
    assert "laptop 64x64" in text.output and "unmapped" in text.output and EXTRA_KEY in text.output


def test_label_with_a_gripper_channel_writes_into_shared_files(so101):
    root, written = so101
    one_line_error(runner.invoke(app, ["label", str(root)]), "data.gripper=[5]")
    stats_before = json.loads((root / "meta/stats.json").read_text())
    args = ["--set", "data.gripper=[5]", "--set", "gate.window=1", "--set", "gate.gripper_closed_above=20"]
    out = runner.invoke(app, ["label", str(root), *args])  # the SO-101's gripper reads 0-100
    assert out.exit_code == 0, out.output
    reader = DatasetReader(root)
    assert reader.is_labelled and (reader.interaction >= 0).all()
    for ep in range(5):  # the gripper command flips every 5 frames: keyframes at 5, 10, 15
        rows = [r for r in reader.episodes if r["episode_index"] == ep][0]
        assert rows["keyframes"] == [k for k in (5, 10, 15) if k < len(written["actions"][ep])]
    for path in sorted((root / "meta/episodes").glob("chunk-*/*.parquet")):  # both files of the table
        assert {"keyframes", "stats/interaction/q50", "stats/action/q01"} <= set(pq.read_schema(path).names)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["features"]["interaction"]["dtype"] == "int64" and info["features"][VIDEO_KEY]["info"]
    stats = json.loads((root / "meta/stats.json").read_text())
    assert stats[IMAGE_KEY] == stats_before[IMAGE_KEY] and "q99" in stats["interaction"]
    np.testing.assert_array_equal(DatasetReader(root).action, reader.action)  # nothing else changed


def test_training_windows_read_it(so101):
    root, written = so101
    reader = DatasetReader(root, DataMapping(cameras={"front": VIDEO_KEY, "wrist": IMAGE_KEY}))
    clips = ClipDataset(reader, "front", [1, 3], [32, 32], 13)
    assert len(clips) == 16 + 18
    item = clips[16 + 10]  # episode 3, frame 10: frames 10..22 of an 18-frame episode
    assert item["video"].shape == (13, 3, 32, 32) and item["video_is_pad"].sum() == 5
    assert clips[12]["instruction"] == TASKS[1] and clips[0]["instruction"] == TASKS[0]
    windows = WindowDataset(reader, "wrist", future_frames=4, action_horizon=6, episodes=[4])
    w = windows[12]
    assert w["video"].shape == (5, 3, 32, 32) and w["action"].shape == (6, 6)
    assert w["action_is_pad"].tolist() == [False] * 3 + [True] * 3
    torch.testing.assert_close(w["action"][0], torch.from_numpy(written["actions"][4][12]))


def test_train_wm_and_experts_on_a_lerobot_layout(tmp_path):
    """Both stages run on a 6-number action from two cameras; the experts learn it at its own dimension."""
    root = tmp_path / "so101"
    write_lerobot_dataset(
        root, lengths=(14, 12, 13), data_files=((0, 1), (2,)), video_files=((0,), (1, 2)), episode_files=((0, 1), (2,))
    )
    labelling = ["--set", "data.gripper=[5]", "--set", "gate.gripper_closed_above=20"]
    assert runner.invoke(app, ["label", str(root), *labelling]).exit_code == 0
    small = [
        *MAPPING,
        "--set",
        "model.overrides={world_model: {resolution: [32, 32]}, predictive_expert: {image_size: 32}, "
        "reactive_expert: {image_size: 32}}",
    ]
    wm = [*small, "--set", "train_wm={batch_size: 2, warmup_steps: 1, preview_every: 100, held_out_episodes: 1}"]
    out = runner.invoke(
        app, ["train-wm", "stack_cans", "--data", str(root), "--out", str(tmp_path / "wm"), "--max-steps", "2", *wm]
    )
    assert out.exit_code == 0, out.output
    ex = [*small, "--set", "train_experts={batch_size: 2, warmup_steps: 1, held_out_episodes: 1, window_stride: 4}"]
    out = runner.invoke(
        app,
        [
            "train-experts",
            "stack_cans",
            "--data",
            str(root),
            "--wm",
            str(tmp_path / "wm/model"),
            "--out",
            str(tmp_path / "experts"),
            "--max-steps",
            "2",
            *ex,
        ],
    )
    assert out.exit_code == 0, out.output
    meta = json.loads((tmp_path / "experts/model/harmowam_experts.json").read_text())
    config = meta["config"]
    assert config["action_dim"] == 6 and config["state_dim"] == 6 and config["cameras"] == ["front", "wrist"]
    assert meta["normalizer"]["state_min"] is None  # joint states: no rotation numbers to clamp
    # no gripper command among 6 joint numbers for a gripper head: one line naming the key
    head = ["--set", "model.overrides.predictive_expert.gripper_head=true"]
    args = ["train-experts", "stack_cans", "--data", str(root), "--wm", str(tmp_path / "wm/model")]
    out = runner.invoke(app, [*args, "--out", str(tmp_path / "experts2"), "--max-steps", "2", *ex, *head])
    one_line_error(out, "model.overrides.predictive_expert.gripper_head")


def test_malformed_datasets_are_one_line_naming_the_file(tmp_path):
    base = tmp_path / "base"
    write_lerobot_dataset(base, codec="h264")

    def broken(name):
        root = tmp_path / name
        shutil.copytree(base, root)
        return root

    root = broken("missing")
    (root / "data/chunk-000/file-001.parquet").unlink()
    with pytest.raises(DatasetError, match=r"file-001.parquet: missing \(the data file of episode 3\)"):
        DatasetReader(root)

    root = broken("count")
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path).to_pandas()
    table.loc[table.episode_index == 1, "length"] = 15
    table.to_parquet(path)
    with pytest.raises(DatasetError, match="file-000.parquet: episode 1 has 16 frames but the episodes table says 15"):
        DatasetReader(root)

    root = broken("short")
    path = root / "meta/episodes/chunk-000/file-001.parquet"
    table = pq.read_table(path).to_pandas()
    table[f"videos/{VIDEO_KEY}/to_timestamp"] += 2.0
    table.to_parquet(path)
    with pytest.raises(DatasetError, match=r"file-001.mp4: the video lasts .* but episode 4 ends at"):
        DatasetReader(root)

    root = broken("empty")  # LeRobot began recording and stopped before the first episode was saved
    shutil.rmtree(root / "meta/episodes")
    info = json.loads((root / "meta/info.json").read_text())
    info.update(total_episodes=0, total_frames=0)
    del info["features"][VIDEO_KEY]["info"]
    (root / "meta/info.json").write_text(json.dumps(info))
    one_line_error(runner.invoke(app, ["info", str(root)]), "no episodes yet")
    one_line_error(runner.invoke(app, ["label", str(root), "--set", "data.gripper=[5]"]), "no episodes yet")


def test_paths_a_dataset_names_never_leave_its_root(tmp_path):
    """A downloaded dataset is untrusted: its camera keys, path templates, file indices and image paths are
    refused in one line naming the key where they would open a file outside it; a template of its own that
    stays inside is honoured."""
    base = tmp_path / "base"
    write_lerobot_dataset(base, codec="h264")

    def copy(name: str, info_edit=None):
        root = tmp_path / name
        shutil.copytree(base, root)
        if info_edit is not None:
            info = json.loads((root / "meta/info.json").read_text())
            info_edit(info)
            (root / "meta/info.json").write_text(json.dumps(info))
        return root

    # a camera key that climbs out: the reader decoded tmp_path/outside/chunk-000/file-000.mp4 before
    evil = "observation.images.x/../../../outside"

    def rename_camera(info):
        info["features"][evil] = info["features"].pop(VIDEO_KEY)

    root = copy("camera", rename_camera)
    for path in sorted((root / "meta/episodes").glob("chunk-*/*.parquet")):
        table = pq.read_table(path)
        pq.write_table(table.rename_columns([c.replace(VIDEO_KEY, evil) for c in table.column_names]), path)
    (root / "videos/observation.images.x").mkdir()  # the folder the path climbs out through exists
    shutil.copytree(base / "videos" / VIDEO_KEY, tmp_path / "outside")
    with pytest.raises(DatasetError, match=r"camera feature key 'observation\.images\.x/\.\./\.\./\.\./outside'"):
        DatasetReader(root)
    one_line_error(runner.invoke(app, ["info", str(root)]), f"camera feature key '{evil}': refused")

    # path templates of info.json: relative, LeRobot's fields only
    for key, template in (
        ("data_path", "../outside/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"),
        ("video_path", "/tmp/{video_key}/file-{file_index:03d}.mp4"),
        ("video_path", "videos/{video_key:.0}../file-{file_index}.mp4"),
        ("data_path", "data/{chunk_index.__class__}.parquet"),
    ):
        root = copy(f"template-{key}-{len(template)}", lambda info, k=key, t=template: info.update({k: t}))
        with pytest.raises(DatasetError, match=f"info.json: key '{key}': .* is refused"):
            DatasetReader(root)

    # a template of the dataset's own that stays inside is honoured
    root = copy("moved", lambda info: info.update(data_path="frames/c{chunk_index}/f{file_index}.parquet"))
    for path in sorted((root / "data").glob("chunk-*/*.parquet")):
        chunk, file = (int(part.split("-")[1].split(".")[0]) for part in (path.parent.name, path.name))
        (root / f"frames/c{chunk}").mkdir(parents=True, exist_ok=True)
        path.rename(root / f"frames/c{chunk}/f{file}.parquet")
    shutil.rmtree(root / "data")
    np.testing.assert_array_equal(DatasetReader(root).action, DatasetReader(base).action)

    # chunk and file indices of the episodes table: whole numbers >= 0
    root = copy("index")
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path).to_pandas()
    table.loc[table.episode_index == 1, "data/file_index"] = -1
    table.to_parquet(path)
    with pytest.raises(DatasetError, match=r"episode 1: 'data/file_index' is -1, not a file index"):
        DatasetReader(root)

    # an image cell that names a file instead of carrying its bytes: inside the dataset only
    root = copy("image")
    (tmp_path / "secret.png").write_bytes((base / "meta/info.json").read_bytes())
    path = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    cells = [{"bytes": None, "path": "../secret.png"}] * table.num_rows
    column = pa.array(cells, table.schema.field(IMAGE_KEY).type)
    pq.write_table(table.set_column(table.column_names.index(IMAGE_KEY), IMAGE_KEY, column), path)
    reader = DatasetReader(root)
    with pytest.raises(DatasetError, match=r"frame 0 of episode 0 in 'observation.images.phone': '../secret.png' lies"):
        reader.frames(0, "phone", [0])


def test_a_dataset_opened_from_inside_it_is_read(tmp_path, monkeypatch):
    """`harmowam info .` in a dataset's folder: the containment check is on the path the dataset names, whatever
    the root (a check against the root `.` refused every file of it as lying outside)."""
    write_lerobot_dataset(tmp_path, codec="h264")
    monkeypatch.chdir(tmp_path)
    reader = DatasetReader(".")
    np.testing.assert_array_equal(reader.action, DatasetReader(tmp_path).action)
    assert reader.frames(0, "laptop", [0]).shape[0] == 1


def test_tasks_stored_either_way(make_dataset, tmp_path):
    ours, _ = make_dataset(lengths=(4,))
    assert read_tasks(ours) == ["stack the cans"]  # the pandas index named "task"
    write_lerobot_dataset(
        tmp_path / "theirs", lengths=(5, 5), data_files=((0, 1),), video_files=((0, 1),), episode_files=((0, 1),)
    )
    assert read_tasks(tmp_path / "theirs") == TASKS  # unnamed: __index_level_0__
    assert "__index_level_0__" in pq.read_schema(tmp_path / "theirs/meta/tasks.parquet").names


def test_our_stats_carry_lerobot_quantiles(make_dataset):
    root, written = make_dataset(lengths=(20, 25))
    stats = json.loads((root / "meta/stats.json").read_text())
    actions = np.concatenate([w[0] for w in written])
    for name in QUANTILE_NAMES:
        assert np.shape(stats["action"][name]) == (7,) and np.shape(stats["observation.images.front"][name]) == (
            3,
            1,
            1,
        )
    per_episode = [np.quantile(w[0], 0.5, axis=0) for w in written]
    expected = (20 * per_episode[0] + 25 * per_episode[1]) / 45  # LeRobot's count-weighted aggregation
    np.testing.assert_allclose(stats["action"]["q50"], expected, rtol=1e-6)
    assert np.all(np.array(stats["action"]["q01"]) <= np.array(stats["action"]["q99"]))
    assert np.all(np.array(stats["action"]["q01"]) >= actions.min(0) - 1e-6)
    row = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()[0]
    np.testing.assert_allclose(row["stats/action/q90"], np.quantile(written[0][0], 0.9, axis=0), rtol=1e-6)
    image = np.array(row["stats/observation.images.front/q50"])
    assert image.shape == (3, 1, 1) and ((0 <= image) & (image <= 1)).all()


def test_hub_ids_resolve_to_the_local_lerobot_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_LEROBOT_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    write_lerobot_dataset(
        tmp_path / "cache/lerobot/so101_test",
        lengths=(5, 6),
        data_files=((0, 1),),
        video_files=((0, 1),),
        episode_files=((0, 1),),
    )
    assert DatasetReader("lerobot/so101_test").root == tmp_path / "cache/lerobot/so101_test"
    out = runner.invoke(app, ["info", "lerobot/so101_test", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["frames"] == 11
    one_line_error(runner.invoke(app, ["info", "lerobot/absent"]), str(tmp_path / "cache/lerobot/absent"))


def test_appending_to_a_lerobot_layout_is_refused(so101):
    from harmowam_core.data.format import DatasetSpec
    from harmowam_core.data.writer import DatasetWriter

    root, _ = so101
    with pytest.raises(DatasetError, match="written by another tool"):
        DatasetWriter(root, DatasetSpec(fps=10, cameras={"front": (32, 32)}))
    assert not (root / "meta/harmowam.json").exists()


# ------------------------------------------------------------------------------------------------ LeRobot itself
def test_lerobot_writes_a_dataset_we_read(tmp_path):
    """LeRobot's own API writes two cameras and a 6-number action; we read it (where lerobot is importable)."""
    lerobot_dataset = pytest.importorskip("lerobot.datasets.lerobot_dataset")
    features = {
        "action": {"dtype": "float32", "shape": (6,), "names": [f"j{i}" for i in range(6)]},
        "observation.state": {"dtype": "float32", "shape": (6,), "names": [f"j{i}" for i in range(6)]},
        VIDEO_KEY: {"dtype": "video", "shape": (64, 64, 3), "names": ["height", "width", "channels"]},
        "observation.images.phone": {"dtype": "video", "shape": (64, 64, 3), "names": ["height", "width", "channels"]},
    }
    ds = lerobot_dataset.LeRobotDataset.create(
        "local/so101", fps=10, root=tmp_path / "so101", features=features, robot_type="so101_follower", use_videos=True
    )
    rng = np.random.default_rng(0)
    actions = []
    for ep in range(3):
        for t in range(12):
            a = rng.normal(size=6).astype(np.float32)
            actions.append(a)
            img = np.full((64, 64, 3), 10 * t + ep, dtype=np.uint8)
            ds.add_frame(
                {"action": a, "observation.state": a, VIDEO_KEY: img, "observation.images.phone": img, "task": "pick"}
            )
        ds.save_episode()
    ds.finalize()
    reader = DatasetReader(tmp_path / "so101")
    assert (reader.num_episodes, reader.num_frames) == (3, 36)
    np.testing.assert_allclose(reader.action, np.stack(actions))
    frames = reader.frames(2, "laptop", [0, 11])
    assert abs(float(frames[1].mean()) - 112) < 4


def test_lerobot_loads_ours_with_quantiles(make_dataset):
    lerobot_dataset = pytest.importorskip("lerobot.datasets.lerobot_dataset")
    root, written = make_dataset(lengths=(8, 6))
    ds = lerobot_dataset.LeRobotDataset("local/harmowam_test", root=root, video_backend="pyav")
    assert ds.num_episodes == 2 and ds.num_frames == 14
    assert {"q01", "q99"} <= set(ds.meta.stats["action"])
    item = ds[9]
    np.testing.assert_allclose(item["action"].numpy(), written[1][0][1])
    image = item["observation.images.front"].numpy()  # (3, H, W) float in [0, 1]
    expected = written[1][2]["front"][1].transpose(2, 0, 1) / 255.0
    assert np.abs(image - expected).mean() < 8 / 255


def test_a_bundle_in_another_action_space_is_refused_on_our_stations(tmp_path):
    from harmowam_core.action_space import check_station_action_space
    from harmowam_core.errors import HarmoWAMError

    for dim, arms, ok in ((6, "single", False), (7, "single", True), (14, "dual", True), (7, "dual", False)):
        bundle = tmp_path / f"b{dim}{arms}"
        (bundle / "experts").mkdir(parents=True)
        (bundle / "experts/harmowam_experts.json").write_text(json.dumps({"config": {"action_dim": dim}}))
        (bundle / "recipe.yaml").write_text(f"arms: {arms}\n")
        if ok:
            check_station_action_space(bundle)
        else:
            with pytest.raises(HarmoWAMError, match=f"{dim}-number action space"):
                check_station_action_space(bundle)
