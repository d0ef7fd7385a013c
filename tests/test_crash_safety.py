"""A writer killed mid-episode leaves a dataset that loads with exactly its complete episodes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from harmowam_core.data.reader import DatasetReader
from harmowam_core.data.writer import DatasetWriter

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
