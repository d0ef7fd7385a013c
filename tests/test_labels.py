import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from harmowam_core.data.labels import LabelSettings, find_keyframes, interaction_labels, label_dataset
from harmowam_core.data.reader import DatasetReader, WindowDataset
from harmowam_core.data.writer import DatasetWriter
from harmowam_core.errors import DatasetError


def arm_signals(gripper, z):
    """(T, 7) action and state blocks with the given gripper command and end-effector height."""
    t = len(gripper)
    action = np.zeros((t, 7), np.float32)
    state = np.zeros((t, 7), np.float32)
    action[:, 6] = gripper
    state[:, 2] = z
    return action, state


def test_gripper_transitions_are_keyframes_with_window():
    gripper = [0] * 5 + [1] * 9 + [0] * 6  # close at 5, open at 14
    action, state = arm_signals(gripper, np.full(20, 0.5))
    keys = find_keyframes(action, state, 1, LabelSettings(window=2))
    assert keys.tolist() == [5, 14]
    labels = interaction_labels(20, keys, 2)
    expected = np.zeros(20, int)
    expected[3:8] = 1
    expected[12:17] = 1  # the 4-frame gap 8-11 between the windows stays transit
    np.testing.assert_array_equal(labels, expected)


def test_transit_gaps_no_longer_than_the_window_join_the_interaction():
    # windows of 2 around 5 and 11 leave a 1-frame gap (8), around 5 and 12 a 2-frame gap (8-9), around 5 and
    # 14 a 4-frame one (8-11); the transit before the first and after the last window is never filled
    np.testing.assert_array_equal(interaction_labels(16, np.array([5, 11]), 2), [0] * 3 + [1] * 11 + [0] * 2)
    np.testing.assert_array_equal(interaction_labels(16, np.array([5, 12]), 2), [0] * 3 + [1] * 12 + [0])
    np.testing.assert_array_equal(
        interaction_labels(18, np.array([5, 14]), 2), [0] * 3 + [1] * 5 + [0] * 4 + [1] * 5 + [0]
    )
    np.testing.assert_array_equal(interaction_labels(10, np.array([1, 8]), 0), [0, 1, 0, 0, 0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(interaction_labels(6, np.array([]), 2), [0] * 6)


def test_height_threshold_crossings_are_keyframes_and_windows_clip_at_the_ends():
    z = np.array([0.30, 0.25, 0.18, 0.12, 0.10, 0.12, 0.18, 0.25])  # dips below 0.15 at 3, back above at 6
    action, state = arm_signals([0] * 8, z)
    keys = find_keyframes(action, state, 1, LabelSettings(window=1, height_thresholds=(0.15,)))
    assert keys.tolist() == [3, 6]
    np.testing.assert_array_equal(interaction_labels(8, keys, 1), [0, 0, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(interaction_labels(8, np.array([0]), 3), [1, 1, 1, 1, 0, 0, 0, 0])
    # No events: all transit.
    action, state = arm_signals([1] * 8, np.full(8, 0.5))
    assert find_keyframes(action, state, 1, LabelSettings(height_thresholds=(0.15,))).size == 0


def test_dual_arm_either_arm_event_counts():
    left_a, left_s = arm_signals([0] * 4 + [1] * 8, np.full(12, 0.4))  # left closes at 4
    right_a, right_s = arm_signals([0] * 12, [0.4] * 9 + [0.2] * 3)  # right dips below 0.3 at 9
    actions = np.concatenate([left_a, right_a], 1)
    states = np.concatenate([left_s, right_s], 1)
    settings = LabelSettings(window=1, height_thresholds=(0.3,))
    keys = find_keyframes(actions, states, 2, settings)
    assert keys.tolist() == [4, 9]
    np.testing.assert_array_equal(interaction_labels(12, keys, 1), [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0])


def test_label_dataset_writes_feature_keyframes_and_reruns_replace(make_dataset):
    root, written = make_dataset(lengths=(21, 14))
    dry = label_dataset(root, LabelSettings(window=1), dry_run=True)
    assert "interaction" not in json.loads((root / "meta/info.json").read_text())["features"]
    results = label_dataset(root, LabelSettings(window=1))
    assert [r.keyframes for r in results] == [r.keyframes for r in dry]
    # The factory's gripper toggles every 7 frames: keyframes at 7, 14 (and 21 would be past the end).
    assert results[0].keyframes == [7, 14] and results[1].keyframes == [7]
    info = json.loads((root / "meta/info.json").read_text())
    assert info["features"]["interaction"] == {"dtype": "int64", "shape": [1], "names": None}
    rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert rows[0]["keyframes"] == [7, 14]
    reader = DatasetReader(root)
    expected0 = interaction_labels(21, np.array([7, 14]), 1)
    np.testing.assert_array_equal(reader.interaction[reader.episode_slice(0)], expected0)
    assert json.loads((root / "meta/stats.json").read_text())["interaction"]["mean"] == pytest.approx(
        (expected0.sum() + 3) / 35
    )
    item = WindowDataset(reader, "front", 12, 12)[6]
    assert int(item["interaction"]) == 1 and item["future_interaction"][:3].tolist() == [1, 1, 1]
    assert json.loads((root / "meta/harmowam.json").read_text())["labels"]["window"] == 1

    label_dataset(root, LabelSettings(window=0))
    reader = DatasetReader(root)
    assert reader.interaction[reader.episode_slice(0)].sum() == 2
    assert pq.read_table(root / "data/chunk-000/file-000.parquet").column_names.count("interaction") == 1


def test_episodes_appended_after_labelling_are_unlabelled_until_relabelled(make_dataset):
    root, _ = make_dataset(lengths=(10,))
    label_dataset(root, LabelSettings(window=1))
    make_dataset(lengths=(8,), root=root)
    reader = DatasetReader(root)
    assert (reader.interaction[reader.episode_slice(1)] == -1).all()
    label_dataset(root, LabelSettings(window=1))
    assert (DatasetReader(root).interaction >= 0).all()


def test_label_refuses_empty_and_missing_datasets(tmp_path):
    with pytest.raises(DatasetError, match="not a dataset"):
        label_dataset(tmp_path / "none", LabelSettings())
    from harmowam_core.data.format import DatasetSpec

    DatasetWriter(tmp_path / "empty", DatasetSpec(fps=10, cameras={"front": (16, 16)})).close()
    with pytest.raises(DatasetError, match="no episodes"):
        label_dataset(tmp_path / "empty", LabelSettings())
