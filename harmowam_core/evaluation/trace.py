"""The episode trace: one parquet row per executed control step, for finding where a policy fails (which expert
acted, what the gate said, where the gripper was against the target object) without re-running the episode.

    trace = EpisodeTrace(Path("runs/eval/x/traces/gate/none/episode_000.parquet"))
    trace.add(step, obs.state, action, used, p, reached, target)   # after each step
    trace.close()                                                   # writes the file (atomically)
    read_trace(path)                                                # -> a pyarrow Table

Columns (LeRobot's names where LeRobot has one):

- `frame_index` (int64): the control step, from 0.
- `observation.state` (list<float32>): the state the action was chosen from, the station's units (per arm x, y, z
  in m, roll, pitch, yaw in rad, gripper closure in [0, 1]).
- `action` (list<float32>): the command executed at that step, the dataset's action space (per arm a delta: m,
  rad, gripper command in [0, 1]).
- `expert` (string): who produced it: `predictive`, `reactive`, `average` or `scripted`.
- `gate.probability` (float32): the gate's p(interaction) for the plan the action came from (paper section
  3.5; every router's plans carry it, whichever expert they execute); null for the scripted expert.
- `stages` (list<bool>): each stage's success after the step.
- `transit_target` (list<float32>, null outside the simulator): the first transit target's centre x, y and
  top height (m), the object whose vicinity appendix D.2's transit measures (`phase_split`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [
        ("frame_index", pa.int64()),
        ("observation.state", pa.list_(pa.float32())),
        ("action", pa.list_(pa.float32())),
        ("expert", pa.string()),
        ("gate.probability", pa.float32()),
        ("stages", pa.list_(pa.bool_())),
        ("transit_target", pa.list_(pa.float32())),
    ]
)


class EpisodeTrace:
    """Collects an episode's steps in memory and writes them as one parquet file on `close()`: written to a
    temporary name and renamed, so a reader never sees a half-written trace."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: dict[str, list] = {name: [] for name in SCHEMA.names}

    def add(
        self,
        step: int,
        state: Sequence[float],
        action: Sequence[float],
        expert: str,
        p: float | None,
        stages: Sequence[bool],
        target: Sequence[float] | None = None,
    ) -> None:
        values = (
            int(step),
            np.asarray(state, dtype=np.float32).tolist(),
            np.asarray(action, dtype=np.float32).tolist(),
            str(expert),
            None if p is None else float(p),
            [bool(s) for s in stages],
            None if target is None else np.asarray(target, dtype=np.float32).tolist(),
        )
        for name, value in zip(SCHEMA.names, values, strict=True):
            self.rows[name].append(value)

    def close(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        pq.write_table(pa.table(self.rows, schema=SCHEMA), partial)
        os.replace(partial, self.path)


def read_trace(path: Path) -> pa.Table:
    """The trace at `path` (see the module docstring for its columns)."""
    return pq.read_table(path, schema=SCHEMA)
