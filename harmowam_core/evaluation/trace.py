"""The episode trace: one parquet row per control step, for finding where a policy fails (which expert acted,
what the gate said, where the gripper was against the target object) without re-running the episode.

    trace = EpisodeTrace(Path("runs/eval/x/traces/gate/none/episode_000.parquet"))
    trace.add(step, obs.state, action, used, p, reached, target)   # after each step
    trace.close("finished", steps)                                  # writes the file (atomically)
    read_trace(path)                                                # -> a pyarrow Table

Columns (LeRobot's names where LeRobot has one):

- `frame_index` (int64): the control step, from 0.
- `observation.state` (list<float32>): the state observed when the action was issued (with action chunks the
  plan came from an earlier observation), the station's units: per arm x, y, z (m, table frame), roll, pitch,
  yaw (rad, from the arm's home orientation), gripper closure in [0, 1].
- `action` (list<float32>): the command the actor issued at that step, the dataset's action space (per arm a
  delta: m, rad, gripper command in [0, 1]), before the station clips it and applies its gripper hysteresis.
- `expert` (string): who produced it: `predictive`, `reactive`, `average` or `scripted`.
- `gate.probability` (float32): the gate's p(interaction) for the plan the action came from (paper section 3.5;
  every router's plans carry it, whichever expert they execute); null for the scripted expert.
- `stages` (list<bool>): each stage's success after the step. On the real station the operator scores the
  stages only after the episode, so there they read False throughout.
- `transit_target` (list<float32>, null outside the simulator): the first transit target of the target's arm
  (arm 0 in every shipped task) when the action was issued: its centre x, y and top height (m, table frame), the
  object whose vicinity appendix D.2's transit measures (`phase_split`).

The file's metadata says how the episode ended (`ended`: finished, interrupted or failed) and how many steps it
ran (`steps`; an interrupted or failed step's action is not a row). An episode played in a worker process that
is stopped midway (Ctrl-C, SIGTERM) leaves no trace, as it leaves no result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harmowam_core.data.meta import atomic_write_table

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
ENDINGS = ("finished", "interrupted", "failed")


def first_target(env):
    """The episode's first transit target now (`SimTask.transit_target`: its arm, object, centre xy and top
    height, m, table frame), or None where it is not defined (not the simulator, or a task without one)."""
    task, view = getattr(env, "task", None), getattr(env, "view", None)
    return task.transit_target(view) if task is not None and view is not None else None


class EpisodeTrace:
    """Collects an episode's steps in memory and writes them as one parquet file on `close()`, through a hidden
    temporary file renamed into place: a reader never sees a half-written trace."""

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

    def close(self, ended: str, steps: int) -> None:
        """Write the file; `ended` is one of ENDINGS, `steps` the steps the episode ran."""
        if ended not in ENDINGS:
            raise ValueError(f"ended must be one of {ENDINGS}, got {ended!r}")
        table = pa.table(self.rows, schema=SCHEMA).replace_schema_metadata({"ended": ended, "steps": str(steps)})
        atomic_write_table(self.path, table)


def read_trace(path: Path) -> pa.Table:
    """The trace at `path` (see the module docstring for its columns and metadata)."""
    return pq.read_table(path)
