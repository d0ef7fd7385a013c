"""`harmowam dataset merge`: shards written by DatasetWriter merged into one LeRobot v3.0 dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_dataset import assert_reads_back  # tests/ is on the path (pytest's rootdir import mode)
from typer.testing import CliRunner

from harmowam_cli.main import app
from harmowam_core.data import format as fmt
from harmowam_core.data import merge as merge_mod
from harmowam_core.data.format import DatasetSpec
from harmowam_core.data.labels import LabelSettings, label_dataset
from harmowam_core.data.merge import merge_datasets
from harmowam_core.data.meta import atomic_write_table, read_episode_rows
from harmowam_core.data.reader import DatasetReader
from harmowam_core.data.summary import summarize
from harmowam_core.data.writer import DatasetWriter
from harmowam_core.errors import DatasetError

runner = CliRunner()
CAMERAS = {"front": (16, 16), "wrist": (16, 24)}


def smooth_frame(t: int, h: int, w: int, phase: float) -> np.ndarray:
    """A smooth, moving RGB image (as conftest's): what a codec reproduces closely."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = 128 + 90 * np.sin(xx / 7.0 + t / 4.0 + phase)
    g = 128 + 90 * np.cos(yy / 6.0 - t / 5.0 + phase)
    b = 128 + 60 * np.sin((xx + yy) / 11.0 + t / 3.0)
    return np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)


def write(root: Path, episodes, *, key: int = 0, task_name="stack_cans", fps=10, cameras=None, num_arms=1):
    """Write `episodes` [(instruction, length), ...] into root; returns [(actions, states, {camera: frames})].

    `key` makes each input's episodes differ (actions, states and images) from every other input's."""
    cameras = cameras or CAMERAS
    spec = DatasetSpec(fps=fps, num_arms=num_arms, cameras=cameras)
    written = []
    with DatasetWriter(root, spec, task_name=task_name, stage_names=["beside", "on_top"]) as writer:
        for e, (instruction, n) in enumerate(episodes):
            rng = np.random.default_rng(100 * key + e)
            actions = rng.normal(size=(n, 7 * num_arms)).astype(np.float32)
            states = rng.normal(size=(n, 7 * num_arms)).astype(np.float32)
            actions[:, 6] = np.arange(n) % 2  # a gripper that toggles: keyframes for the labeller
            phase = 1.7 * key + 0.9 * e
            frames = {c: [smooth_frame(t, h, w, phase=phase) for t in range(n)] for c, (h, w) in cameras.items()}
            with writer.episode(instruction) as ep:
                for t in range(n):
                    ep.add_frame(actions[t], states[t], {c: frames[c][t] for c in cameras})
                ep.save([True, e % 2 == 0])
            written.append((actions, states, frames))
    return written


def set_scenes(root: Path, seeds: list[int], ood: list[str] | None = None) -> None:
    """Give each episode row the `seed` (and `ood`) columns collect records, as a newer writer would."""
    rows = read_episode_rows(root)
    for i, row in enumerate(rows):
        row["seed"] = seeds[i]
        if ood is not None:
            row["ood"] = ood[i]
    atomic_write_table(root / fmt.EPISODES_PATH.format(chunk_index=0, file_index=0), pa.Table.from_pylist(rows))


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def invoke(*args) -> object:
    return runner.invoke(app, ["dataset", "merge", *map(str, args)])


def assert_one_line_error(out, *phrases: str) -> None:
    assert out.exit_code == 2, out.output
    text = out.output.strip()
    assert text.startswith("error:") and len(text.splitlines()) == 1, text
    assert "Traceback" not in out.output
    for phrase in phrases:
        assert phrase in text, (phrase, text)


def assert_lerobot_layout(root: Path, written: list) -> None:
    """The checks of test_dataset.py's layout and stats tests, for episodes `written` in merged order."""
    lengths = [len(w[0]) for w in written]
    n_frames = sum(lengths)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert (info["total_episodes"], info["total_frames"]) == (len(written), n_frames)
    assert info["splits"] == {"train": f"0:{len(written)}"}
    rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    assert [(r["episode_index"], r["length"], r["dataset_from_index"], r["dataset_to_index"]) for r in rows] == [
        (e, n, s, s + n) for e, (n, s) in enumerate(zip(lengths, starts, strict=True))
    ]
    episode_of = np.repeat(np.arange(len(written)), lengths)
    for e, row in enumerate(rows):
        assert (row["data/chunk_index"], row["data/file_index"]) == fmt.chunk_file(e)
        data = pq.read_table(root / f"data/chunk-000/file-{e:03d}.parquet")
        assert data.column("episode_index").to_pylist() == [e] * row["length"]
        assert data.column("index").to_pylist() == list(range(row["dataset_from_index"], row["dataset_to_index"]))
        assert data.column("frame_index").to_pylist() == list(range(row["length"]))
        assert row["stats/index/min"] == [row["dataset_from_index"]] and row["stats/episode_index/mean"] == [e]
        for vk in ("observation.images.front", "observation.images.wrist"):
            assert (row[f"videos/{vk}/chunk_index"], row[f"videos/{vk}/file_index"]) == fmt.chunk_file(e)
            assert (root / f"videos/{vk}/chunk-000/file-{e:03d}.mp4").is_file()
    assert sorted(p.name for p in (root / "data/chunk-000").iterdir()) == [
        f"file-{e:03d}.parquet" for e in range(len(written))
    ]
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    assert info["total_tasks"] == tasks.num_rows and tasks.column("task_index").to_pylist() == list(
        range(tasks.num_rows)
    )

    stats = json.loads((root / "meta/stats.json").read_text())
    actions = np.concatenate([w[0] for w in written]).astype(np.float64)
    states = np.concatenate([w[1] for w in written]).astype(np.float64)
    task_index = np.concatenate(
        [pq.read_table(root / f"data/chunk-000/file-{e:03d}.parquet").column("task_index") for e in range(len(rows))]
    )
    for key, values in (
        ("action", actions),
        ("observation.state", states),
        ("index", np.arange(n_frames)[:, None]),
        ("episode_index", episode_of[:, None]),
        ("task_index", np.asarray(task_index)[:, None]),
    ):
        for name, fn in (("min", np.min), ("max", np.max), ("mean", np.mean), ("std", np.std)):
            np.testing.assert_allclose(stats[key][name], fn(values, axis=0), rtol=1e-6, atol=1e-6, err_msg=key)
        assert stats[key]["count"] == [n_frames]
    for cam in CAMERAS:
        frames = np.concatenate([np.stack(w[2][cam]) for w in written]).astype(np.float64) / 255
        img = stats[f"observation.images.{cam}"]
        np.testing.assert_allclose(np.asarray(img["mean"]).ravel(), frames.mean(axis=(0, 1, 2)), atol=1e-9)
        np.testing.assert_allclose(np.asarray(img["std"]).ravel(), frames.std(axis=(0, 1, 2)), atol=1e-9)


@pytest.fixture
def shards(tmp_path):
    """Two shards of one collection: 2 + 1 episodes, seeds 0-1 and 2."""
    a, b = tmp_path / "data/a", tmp_path / "data/b"
    wa = write(a, [("stack the cans", 3), ("stack the cans", 5)], key=1)
    wb = write(b, [("stack the cans", 4)], key=2)
    set_scenes(a, [0, 1], ["none", "none"])
    set_scenes(b, [2], ["none"])
    return a, b, wa + wb


# --------------------------------------------------------------------------------------------- merging
def test_merged_shards_read_back_in_order_with_their_videos_and_the_lerobot_layout(shards, tmp_path):
    a, b, written = shards
    out = tmp_path / "data/merged"
    before = snapshot(a), snapshot(b)
    result = invoke(out, a, b)
    assert result.exit_code == 0, result.output
    assert "3 episodes" in result.output and "12 frames" in result.output and "2 dataset(s)" in result.output

    assert_lerobot_layout(out, written)
    reader = assert_reads_back(out, written)
    assert reader.frame(9)["task"] == "stack the cans"  # episode 2, frame 1
    np.testing.assert_array_equal(reader.frame(9)["action"], written[2][0][1])
    assert (snapshot(a), snapshot(b)) == before
    meta = json.loads((out / "meta/harmowam.json").read_text())
    assert meta["task"] == "stack_cans" and meta["stage_names"] == ["beside", "on_top"]
    assert meta["merged_from"] == [str(a), str(b)] and meta["labels"] is None
    # Videos are hard links of the inputs' files on one file system; nothing partial is left beside OUT.
    src = a / "videos/observation.images.front/chunk-000/file-001.mp4"
    assert os.stat(out / "videos/observation.images.front/chunk-000/file-001.mp4").st_ino == os.stat(src).st_ino
    assert sorted(p.name for p in out.parent.iterdir()) == ["a", "b", "merged"]
    summary = summarize(out)
    assert (summary["episodes"], summary["frames"]) == (3, 12)
    assert [s["success_rate"] for s in summary["stages"]] == [1.0, pytest.approx(2 / 3)]

    # The merged dataset is an ordinary dataset: the writer appends episode 3 after it.
    more = write(out, [("stack the cans", 2)], key=3)
    assert_lerobot_layout(out, written + more)


def test_copy_and_a_single_input(shards, tmp_path):
    a, _, written = shards
    out = tmp_path / "one"
    out.mkdir()  # an empty OUT is fine
    result = merge_datasets(out, [a], link=False)
    assert (result.episodes, result.frames, result.videos_linked, result.videos_copied) == (2, 8, 0, 4)
    src = a / "videos/observation.images.front/chunk-000/file-000.mp4"
    assert os.stat(out / "videos/observation.images.front/chunk-000/file-000.mp4").st_ino != os.stat(src).st_ino
    assert_lerobot_layout(out, written[:2])


def test_tasks_are_reindexed(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    wa = write(a, [("stack the cans", 2)], key=1)
    wb = write(b, [("put the cans up", 3), ("stack the cans", 2), ("put the cans up", 2)], key=2)
    out = tmp_path / "out"
    result = merge_datasets(out, [a, b])
    assert result.tasks == ["stack the cans", "put the cans up"]
    tasks = pq.read_table(out / "meta/tasks.parquet").to_pydict()
    assert tasks == {"task_index": [0, 1], "task": ["stack the cans", "put the cans up"]}
    reader = DatasetReader(out)
    expected = [0, 0, 1, 1, 1, 0, 0, 1, 1]  # b's "put the cans up" was its task 0, now 1; its task 1 now 0
    assert reader.task_index.tolist() == expected
    assert [reader.frame(i)["task"] for i in (0, 2, 5, 7)] == [
        "stack the cans",
        "put the cans up",
        "stack the cans",
        "put the cans up",
    ]
    rows = read_episode_rows(out)
    assert [r["tasks"][0] for r in rows] == ["stack the cans", "put the cans up", "stack the cans", "put the cans up"]
    assert [r["stats/task_index/mean"] for r in rows] == [[0.0], [1.0], [0.0], [1.0]]
    assert_lerobot_layout(out, wa + wb)


def test_extra_episode_columns_survive_and_older_inputs_get_nulls(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    w_old = write(old, [("stack the cans", 2)], key=1)
    path = old / fmt.EPISODES_PATH.format(chunk_index=0, file_index=0)
    table = pq.read_table(path)  # as an older writer left it: no seed / ood columns
    atomic_write_table(path, table.drop_columns([c for c in ("seed", "ood") if c in table.column_names]))
    w_new = write(new, [("stack the cans", 3), ("stack the cans", 2)], key=2)
    set_scenes(new, [7, 8], ["position", "none"])
    out = tmp_path / "out"
    merge_datasets(out, [old, new])
    table = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet")
    assert table.schema.field("seed").type == pa.int64() and table.schema.field("ood").type == pa.string()
    rows = table.to_pylist()
    assert [(r["seed"], r["ood"]) for r in rows] == [(None, None), (7, "position"), (8, "none")]
    assert [r["stage_success"] for r in rows] == [[True, True], [True, True], [True, False]]
    assert [r["keyframes"] for r in rows] == [[], [], []]
    assert_lerobot_layout(out, w_old + w_new)


def test_labels_are_kept_when_every_input_is_labelled_alike(shards, tmp_path):
    a, b, written = shards
    for root in (a, b):
        label_dataset(root, LabelSettings(window=1))
    keyframes = [r["keyframes"] for root in (a, b) for r in read_episode_rows(root)]
    labels = np.concatenate([DatasetReader(root).interaction for root in (a, b)])
    out = tmp_path / "out"
    assert merge_datasets(out, [a, b]).labels == "kept"
    reader = DatasetReader(out)
    assert reader.is_labelled and reader.interaction.tolist() == labels.tolist()
    assert [r["keyframes"] for r in reader.episodes] == keyframes and any(keyframes)
    assert reader.meta["labels"]["window"] == 1 and reader.meta["labels"]["episodes"] == 3
    np.testing.assert_allclose(reader.stats()["interaction"]["mean"], [labels.mean()])
    assert_lerobot_layout(out, written)


def test_mixed_labels_are_refused_unless_dropped(shards, tmp_path):
    a, b, written = shards
    label_dataset(a, LabelSettings(window=1))
    assert_one_line_error(invoke(tmp_path / "out", a, b), f"{a} is labelled but {b} is not", "--drop-labels")
    label_dataset(b, LabelSettings(window=2))
    assert_one_line_error(invoke(tmp_path / "out", a, b), "different settings", "window 1 vs window 2")
    assert not (tmp_path / "out").exists()

    result = invoke(tmp_path / "out", a, b, "--drop-labels")
    assert result.exit_code == 0, result.output
    assert "gate labels dropped" in result.output
    reader = DatasetReader(tmp_path / "out")
    assert not reader.is_labelled and reader.meta["labels"] is None
    assert "interaction" not in pq.read_table(reader.root / "data/chunk-000/file-000.parquet").column_names
    assert all(r["keyframes"] == [] and "stats/interaction/mean" not in r for r in reader.episodes)
    assert "interaction" not in reader.stats()
    assert_lerobot_layout(tmp_path / "out", written)


# --------------------------------------------------------------------------------------------- refusals
def test_refusals_are_one_line_with_exit_code_2(shards, tmp_path):
    a, b, _ = shards
    out = tmp_path / "out"
    other_fps = tmp_path / "fps"
    write(other_fps, [("stack the cans", 2)], fps=20)
    other_cams = tmp_path / "cams"
    write(other_cams, [("stack the cans", 2)], cameras={"front": (16, 16)})
    dual = tmp_path / "dual"
    write(dual, [("stack the cans", 2)], num_arms=2)
    flowers = tmp_path / "flowers"
    write(flowers, [("stack the cans", 2)], task_name="flowers")
    av1 = tmp_path / "av1"  # an input whose videos are AV1: only its info.json tells
    write(av1, [("stack the cans", 2)], key=5)
    info = json.loads((av1 / "meta/info.json").read_text())
    for cam in CAMERAS:
        info["features"][f"observation.images.{cam}"]["info"]["video.codec"] = "av1"
    (av1 / "meta/info.json").write_text(json.dumps(info))
    extra = tmp_path / "extra"
    write(extra, [("stack the cans", 2)], key=6)
    info = json.loads((extra / "meta/info.json").read_text())
    info["features"]["observation.effort"] = {"dtype": "float32", "shape": [7], "names": None}
    (extra / "meta/info.json").write_text(json.dumps(info))
    same_seeds = tmp_path / "same_seeds"
    write(same_seeds, [("stack the cans", 2)], key=7)
    set_scenes(same_seeds, [1], ["none"])
    full = tmp_path / "full"
    (full / "x").mkdir(parents=True)
    not_a_dataset = tmp_path / "empty"
    not_a_dataset.mkdir()

    cases = [
        ((out, a, other_fps), ["differ in fps (10 vs 20)", "same recipe"]),
        ((out, a, other_cams), ["differ in cameras (front 16x16, wrist 16x24 vs front 16x16)"]),
        ((out, a, dual), ["differ in arms (1 vs 2)"]),
        ((out, a, av1), ["differ in video codec (h264 vs av1)"]),
        ((out, a, extra), ["differ in features (observation.effort)"]),
        ((out, a, flowers), ["holds task 'stack_cans'", "task 'flowers'"]),
        ((full, a), [f"{full}: exists and is not empty"]),
        ((a, b), [f"{a}: exists and is not empty"]),
        ((a / "merged", b, a), [f"lies inside the input {a}"]),
        ((out, a, not_a_dataset), [f"{not_a_dataset}: not a dataset"]),
        ((out, a, tmp_path / "missing"), ["no such dataset directory"]),
        ((out, a, a), ["given twice"]),
        ((out,), ["at least one dataset"]),
        ((out, a, b, same_seeds), [f"{a} and {same_seeds} both hold the none scene of seed 1", "--shard i/N"]),
    ]
    for args, phrases in cases:
        assert_one_line_error(invoke(*args), *phrases)
        assert not out.exists() and not (a / "merged").exists(), args
        assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name], args


def test_same_seed_in_another_ood_protocol_is_a_different_scene(shards, tmp_path):
    a, _, written = shards
    c = tmp_path / "c"
    wc = write(c, [("stack the cans", 2)], key=8)
    set_scenes(c, [0], ["position"])  # seed 0 as a's first episode, but a position-OOD scene
    merge_datasets(tmp_path / "out", [a, c])
    assert DatasetReader(tmp_path / "out").num_episodes == 3
    assert_lerobot_layout(tmp_path / "out", written[:2] + wc)


def test_an_input_being_written_is_refused(shards, tmp_path):
    a, b, _ = shards
    with DatasetWriter(b), pytest.raises(DatasetError, match="another process is writing"):
        merge_datasets(tmp_path / "out", [a, b])
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------- crash safety
def test_an_interrupted_merge_leaves_no_output_and_the_inputs_unchanged(shards, tmp_path, monkeypatch):
    a, b, written = shards
    out = tmp_path / "data/merged"
    before = snapshot(a), snapshot(b)
    real_place = merge_mod._place
    placed = []

    def place_then_interrupt(src, dest, link):
        if len(placed) == 3:  # midway: episode 1's second video
            raise KeyboardInterrupt
        placed.append(dest)
        return real_place(src, dest, link)

    monkeypatch.setattr(merge_mod, "_place", place_then_interrupt)
    result = invoke(out, a, b)
    assert result.exit_code == 130 and "interrupted" in result.output
    assert len(placed) == 3 and not out.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["a", "b"]
    assert (snapshot(a), snapshot(b)) == before

    monkeypatch.setattr(merge_mod, "_place", real_place)
    stale = out.parent / "merged.partial-0123456789ab"  # as left by a merge killed with SIGKILL
    (stale / "data").mkdir(parents=True)
    merge_datasets(out, [a, b])  # the locks were released; the stale partial directory is cleaned up
    assert not stale.exists()
    assert_lerobot_layout(out, written)


def test_loads_in_lerobot(shards, tmp_path):
    """The merged dataset loads in LeRobot's own LeRobotDataset, where LeRobot is installed."""
    lerobot_dataset = pytest.importorskip("lerobot.datasets.lerobot_dataset")
    a, b, written = shards
    merge_datasets(tmp_path / "out", [a, b])
    ds = lerobot_dataset.LeRobotDataset("local/harmowam_merge_test", root=tmp_path / "out")
    assert ds.num_episodes == 3 and ds.num_frames == 12
    np.testing.assert_allclose(ds[9]["action"].numpy(), written[2][0][1])
