"""Teleoperating the real station: SpaceMouse reports (fake `hid`), terminal keys, and a dry-run keyboard
collection that writes the same dataset format with operator-scored stages."""

from __future__ import annotations

import io
import os
import sys
import threading
import time

import numpy as np
import pytest
import yaml
from fakes import STATION, FakeDevice, report

from harmowam_core.envs.real.config import station_config_from_data
from harmowam_core.envs.real.teleop import RealTeleop, SpaceMouse, TerminalKeys, open_spacemice
from harmowam_core.errors import HarmoWAMError


def test_spacemouse_reports_become_bounded_actions_and_buttons_toggle():
    station = station_config_from_data(STATION)
    mouse = SpaceMouse(FakeDevice([report(1, 350, -175, 0), report(2, 0, 0, 700), [3, 1]]))
    pilot = RealTeleop([mouse], station)
    action = pilot.act()
    np.testing.assert_allclose(action[:3], [0.01, -0.02, 0.0])  # push toward the user, right: -x*, -y*
    assert np.linalg.norm(action[3:6]) == pytest.approx(0.1, abs=1e-6)  # full twist: max_rotation
    assert action[6] == 1.0  # button 1 pressed: the gripper closes
    mouse.device.reports = [[3, 1]]
    assert pilot.act()[6] == 1.0  # held, not pressed again: no toggle
    mouse.device.reports = [[3, 0], [3, 2]]
    pilot.act()
    assert pilot.stopped  # the right button ends the episode
    newer = SpaceMouse(FakeDevice([report(1, 10, 20, 30, 40, 50, 60)]))  # one 13-byte report with both
    motion, _ = newer.poll()
    np.testing.assert_allclose(motion * 350, [10, 20, 30, 40, 50, 60])


def test_a_missing_spacemouse_is_a_clear_error():
    hid = type("hid", (), {"enumerate": staticmethod(lambda: [{"vendor_id": 0x256F, "path": b"/dev/hidraw3"}]),
                           "device": FakeDevice})  # fmt: skip
    assert len(open_spacemice(1, hid)) == 1
    with pytest.raises(HarmoWAMError, match="2 SpaceMouse.* 1 found"):
        open_spacemice(2, hid)


def test_terminal_keys_drive_the_active_arm():
    two = yaml.safe_load(yaml.safe_dump(STATION))
    two["arms"].append({**two["arms"][0], "name": "left"})
    keys = TerminalKeys(io.StringIO("ww \tr"))
    pilot = RealTeleop(keys, station_config_from_data(two))
    deadline = time.monotonic() + 5
    while len(keys._keys) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    action = pilot.act()
    np.testing.assert_allclose(action[[0, 6, 9]], [0.02, 1.0, 0.02])  # arm 0: two w -> clipped +x, gripper; arm 1: r
    assert pilot.arm == 1


def test_dry_run_keyboard_collection_writes_scored_episodes(tmp_path, monkeypatch):
    from harmowam_core.collect import collect
    from harmowam_core.config import load_recipe
    from harmowam_core.data.reader import DatasetReader

    read, write = os.pipe()

    def operator():  # y (send home), w, w (move), Enter (end), y n (stages), y (keep), one key at a time
        for key in (b"y", b"w", b"w", b"\n", b"yny"):
            time.sleep(0.3)
            os.write(write, key)
        os.close(write)

    threading.Thread(target=operator, daemon=True).start()
    monkeypatch.setattr(sys, "stdin", os.fdopen(read))
    monkeypatch.setitem(sys.modules, "franky", None)
    station = tmp_path / "station.yaml"
    station.write_text(yaml.safe_dump(STATION))
    stats = collect(load_recipe("stack_cans"), tmp_path / "data", 1, teleop="keyboard", backend="real",
                    station=station, dry_run=True)  # fmt: skip
    assert stats.saved == 1 and stats.stage_counts == [1, 0]
    reader = DatasetReader(tmp_path / "data")
    assert reader.num_episodes == 1 and reader.info["robot_type"] == "franka_fr3"
    assert reader.lengths[0] >= 1 and reader.episodes[0]["stage_success"] == [True, False]
    with pytest.raises(HarmoWAMError, match="no scripted expert"):
        collect(load_recipe("stack_cans"), tmp_path / "d2", 1, backend="real", station=station, dry_run=True)


def test_terminal_keys_refuse_stdin_while_a_deploy_operator_terminal_reads_it(monkeypatch):
    from harmowam_core.envs.real import operator

    monkeypatch.setattr(operator, "_stdin", object())  # a deploy's reader started earlier in this process
    with pytest.raises(HarmoWAMError, match="stdin is already read by this process's real-station operator"):
        TerminalKeys()
