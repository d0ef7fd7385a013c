"""Where the commands keep things by default, relative to a root (the working directory, or `demo`/`reproduce`'s
`--out`): one place for the layout every command and the README describe.

    ws = Workspace()                       # the current directory
    ws.data("stack_cans")                  # data/stack_cans
    ws.wm_model("stack_cans")              # runs/stack_cans/wm/model
    ws.eval_run("stack_cans-20261124")     # runs/eval/stack_cans-20261124-<time>
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    root: Path = Path(".")

    def data(self, task: str) -> Path:
        """A task's dataset (LeRobot v3.0 layout)."""
        return self.root / "data" / task

    def runs(self, task: str) -> Path:
        return self.root / "runs" / task

    def wm_run(self, task: str) -> Path:
        """train-wm's run directory (checkpoints, previews, evaluation.json, model/)."""
        return self.runs(task) / "wm"

    def wm_model(self, task: str) -> Path:
        return self.wm_run(task) / "model"

    def experts_run(self, task: str) -> Path:
        """train-experts' run directory (cache, checkpoints, snapshots, report.json, model/)."""
        return self.runs(task) / "experts"

    @property
    def bundles(self) -> Path:
        return self.root / "bundles"

    def deploy_run(self, bundle: str) -> Path:
        """A new deploy run of a bundle, stamped with the local time."""
        return self.root / "runs" / "deploy" / f"{bundle}-{time.strftime('%Y%m%d-%H%M%S')}"

    def eval_run(self, name: str, suffix: str = "") -> Path:
        """A new evaluation's results directory, stamped with the local time (`name`: the bundle, or merged;
        `suffix`: a shard's, e.g. -shard0of4)."""
        return self.root / "runs" / "eval" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}"


DEFAULT = Workspace()
