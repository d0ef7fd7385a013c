"""Crash safety: a writer killed mid-episode leaves a dataset that loads with exactly its complete episodes; a
labeller killed at any moment of its commit leaves the old labels or the new ones; a full disk (ENOSPC) while
writing an episode, labels or a bundle is one line, exit code 2, and keeps what was saved before.
`benchmarks/chaos.py` kills the real commands at random moments; these tests inject the faults in-process."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors import SafetensorError
from typer.testing import CliRunner

from harmowam_cli.main import app
from harmowam_core import collect as collect_module
from harmowam_core.collect import ScriptedEpisode
from harmowam_core.config import load_recipe
from harmowam_core.data import labels as labels_module
from harmowam_core.data import meta as meta_module
from harmowam_core.data.labels import LabelSettings, label_dataset
from harmowam_core.data.reader import DatasetReader
from harmowam_core.data.writer import DatasetWriter, EpisodeRecorder
from harmowam_core.models import experts as experts_module
from harmowam_core.policy import bundle as bundle_module
from harmowam_core.policy.bundle import export_bundle, untrained_run, verify_bundle

runner = CliRunner()
SMALL_CAMERAS = (
    "cameras=[{name: front, role: front, height: 16, width: 16}, {name: top, role: top, height: 16, width: 16}, "
    "{name: wrist, role: wrist, height: 16, width: 16}]"
)

WRITER = textwrap.dedent(
    """
    import sys, time, pathlib
    import numpy as np
    from harmowam_core.data.format import DatasetSpec
    from harmowam_core.data.writer import DatasetWriter

    root, ready = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    spec = DatasetSpec(fps=10, num_arms=1, cameras={"front": (32, 32)})
    img = np.full((32, 32, 3), 90, np.uint8)
    with DatasetWriter(root, spec, task_name="stack_cans") as writer:
        for e in range(2):
            with writer.episode("stack") as ep:
                for t in range(15):
                    ep.add_frame(np.full(7, e + t / 100), np.zeros(7), {"front": img})
                ep.save([True, True])
        with writer.episode("stack") as ep:
            for t in range(10_000):  # never finishes: killed while recording
                ep.add_frame(np.full(7, 9.0), np.zeros(7), {"front": img})
                if t == 20:
                    ready.write_text("recording")
                time.sleep(0.002)
    """
)


def test_killed_writer_leaves_only_complete_episodes_and_appending_resumes(tmp_path):
    root, ready = tmp_path / "ds", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(ready)])
    try:
        deadline = time.time() + 120
        while not ready.exists():
            assert proc.poll() is None, "writer exited early"
            assert time.time() < deadline, "writer never started its third episode"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert any((root / ".staging").iterdir())  # the unfinished episode was in staging

    reader = DatasetReader(root)
    assert (reader.num_episodes, reader.num_frames) == (2, 30)
    assert not np.any(reader.action == 9.0)
    info = json.loads((root / "meta/info.json").read_text())
    assert (info["total_episodes"], info["total_frames"]) == (2, 30)

    # The lock died with the process; writing again cleans staging and appends episode 2.
    with DatasetWriter(root) as writer:
        assert not (root / ".staging").exists()
        with writer.episode("stack") as ep:
            for _ in range(5):
                ep.add_frame(np.ones(7), np.zeros(7), {"front": np.zeros((32, 32, 3), np.uint8)})
            assert ep.save([False, False]) == 2
    reader = DatasetReader(root)
    assert reader.num_episodes == 3 and reader.episodes[2]["dataset_from_index"] == 30


def test_files_of_an_interrupted_commit_are_removed(make_dataset):
    """Files renamed into place before the episode row was written belong to no episode and are dropped."""
    root, _ = make_dataset(lengths=(6, 6))
    orphan_data = root / "data/chunk-000/file-002.parquet"
    orphan_video = root / "videos/observation.images.front/chunk-000/file-002.mp4"
    orphan_data.write_bytes((root / "data/chunk-000/file-001.parquet").read_bytes())
    orphan_video.write_bytes(b"half a video")
    info_path = root / "meta/info.json"
    info = json.loads(info_path.read_text())
    info["total_episodes"] = 3  # as if killed between the episodes table and info.json
    info_path.write_text(json.dumps(info))

    with DatasetWriter(root) as writer:
        assert writer.num_episodes == 2
    assert not orphan_data.exists() and not orphan_video.exists()
    assert json.loads(info_path.read_text())["total_episodes"] == 2
    assert DatasetReader(root).num_frames == 12


# ------------------------------------------------------------------------------------------- labels, killed
class Killed(BaseException):
    """Raised in place of a rename: no `except Exception` catches it, and nothing after the rename runs, as after
    a SIGKILL at that moment."""


def label_state(root) -> tuple:
    """Everything `label` writes: each frame's label, the keyframes, the label stats, the recorded window."""
    reader = DatasetReader(root)
    keyframes = [list(r["keyframes"]) for r in reader.episodes]
    stats = [r.get("stats/interaction/mean") for r in reader.episodes]
    return (
        reader.interaction.tolist(),
        keyframes,
        stats,
        reader.stats()["interaction"],
        reader.meta["labels"]["window"],
    )


def test_a_labeller_killed_at_any_rename_leaves_the_old_labels_or_the_new(make_dataset, tmp_path, monkeypatch):
    """The labels span every data file, the episodes table, stats.json, info.json and harmowam.json; killed after
    any number of its renames, the dataset reads (and is recovered to) all old or all new labels."""
    base, _ = make_dataset(lengths=(12, 15, 9))
    old, new = LabelSettings(window=0), LabelSettings(window=3)
    label_dataset(base, old)
    states = {}
    for name, settings in (("new", new), ("old", old)):
        copy = tmp_path / f"{name}-copy"
        shutil.copytree(base, copy)
        label_dataset(copy, settings)
        states[name] = label_state(copy)
    assert states["old"] != states["new"]

    real_replace = os.replace

    def replace_until(kill_after: int, done: list):
        def replace(src, dst):
            if len(done) == kill_after:
                raise Killed
            done.append(dst)
            real_replace(src, dst)

        return replace

    renames = 3 + 1 + 3 + 1  # data files, episodes table, stats/info/harmowam.json, and the commit record first
    for kill_after in range(renames):
        root = tmp_path / f"killed-{kill_after}"
        shutil.copytree(base, root)
        done = []
        monkeypatch.setattr(meta_module.os, "replace", replace_until(kill_after, done))
        with pytest.raises(Killed):
            label_dataset(root, new)
        monkeypatch.setattr(meta_module.os, "replace", real_replace)
        state = label_state(root)  # the reader completes a commit whose record is written
        assert state == states["old" if kill_after == 0 else "new"], kill_after
        with DatasetWriter(root):  # recovery leaves no temporary file behind
            pass
        assert not list(root.rglob("*.tmp")) and not (root / meta_module.PENDING_PATH).exists()
        assert label_state(root) == state
    assert len(done) == renames - 1  # the last one was killed at its last rename


# ------------------------------------------------------------------------------------------- full disk
def enospc(path="x") -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def assert_disk_full_line(out) -> None:
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no space left on the device"), out.stderr
    assert "Traceback" not in out.output


class SyntheticRecorder:
    """Records synthetic frames instead of the simulator's (collect's RECORDER, for a fast CLI collect)."""

    def __init__(self, recipe, spec, staging_root, ood, keep_failures, detour=0.0):
        self.recipe, self.spec, self.staging_root, self.ood = recipe, spec, staging_root, ood

    def run(self, seed, on_step=None):
        recorder = EpisodeRecorder(self.spec, self.staging_root, self.recipe.instruction)
        for t in range(5):
            images = {c: np.full((h, w, 3), 10 * t + seed, np.uint8) for c, (h, w) in self.spec.cameras.items()}
            recorder.add_frame(np.full(self.spec.action_dim, seed), np.zeros(self.spec.state_dim), images)
        stages = [True] * len(self.recipe.stages)
        return ScriptedEpisode(seed, stages, 5, recorder.finish(stages, seed=seed, ood=self.ood))

    def close(self):
        pass


def test_a_full_disk_while_committing_an_episode_is_one_line_and_keeps_the_earlier(tmp_path, monkeypatch):
    monkeypatch.setattr(collect_module, "RECORDER", f"{__name__}:SyntheticRecorder")
    out = tmp_path / "ds"
    args = ["collect", "--task", "stack_cans", "--episodes", "4", "--out", str(out), "--workers", "1"]
    real_write = pq.write_table
    written = []

    def write_table(table, where, *a, **k):
        if str(where).endswith("data.parquet"):  # the episode's staged data file, in the middle of its commit
            written.append(where)
            if len(written) == 3:
                raise enospc(where)
        return real_write(table, where, *a, **k)

    monkeypatch.setattr(pq, "write_table", write_table)
    assert_disk_full_line(runner.invoke(app, [*args, "--set", SMALL_CAMERAS]))
    reader = DatasetReader(out)
    assert reader.num_episodes == 2 and [r["seed"] for r in reader.episodes] == [0, 1]
    assert reader.frames(1, "front", range(5)).shape == (5, 16, 16, 3)

    monkeypatch.setattr(pq, "write_table", real_write)  # space again: collecting continues after them
    assert runner.invoke(app, [*args, "--set", SMALL_CAMERAS]).exit_code == 0
    assert [r["seed"] for r in DatasetReader(out).episodes] == [0, 1, 2, 3, 4, 5]


def test_a_full_disk_while_labelling_is_one_line_and_keeps_the_old_labels(make_dataset, monkeypatch):
    root, _ = make_dataset(lengths=(12, 15, 9))
    label_dataset(root, LabelSettings(window=0))
    before = label_state(root)
    real_stage = labels_module.stage_table
    calls = []

    def stage_table(path, table):
        calls.append(path)
        if len(calls) == 2:  # the second data file
            raise enospc(path)
        return real_stage(path, table)

    monkeypatch.setattr(labels_module, "stage_table", stage_table)
    assert_disk_full_line(runner.invoke(app, ["label", str(root), "--window", "3"]))
    assert label_state(root) == before
    assert not list(root.rglob("*.tmp"))  # the staged files are removed, not left to fill the disk


@pytest.mark.parametrize("where", ["weights", "recipe"])
def test_a_full_disk_while_exporting_is_one_line_and_leaves_no_bundle(tmp_path, monkeypatch, where):
    run = untrained_run(tmp_path / "run", load_recipe("stack_cans"), resolution=32)
    bundles = tmp_path / "bundles"
    earlier = export_bundle(run, bundles, "earlier")

    def full(*args, **kwargs):
        if where == "weights":  # safetensors' own error (chaos.py's tmpfs run met it), not an OSError
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        raise enospc(args[1])

    target = (experts_module, "save_file") if where == "weights" else (bundle_module.shutil, "copyfile")
    monkeypatch.setattr(*target, full)
    assert_disk_full_line(runner.invoke(app, ["export", str(run), "--bundles", str(bundles), "--name", "full"]))
    assert sorted(p.name for p in bundles.iterdir()) == ["earlier"]
    verify_bundle(earlier)
