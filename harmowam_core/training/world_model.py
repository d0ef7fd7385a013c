"""Stage 1: train the world model on a dataset's front (single-arm) or global (dual-arm) camera.

    result = train_world_model(recipe, "data/stack_cans", "runs/stack_cans/wm")
    result.evaluation.late_gain   # dB the prediction gains over copying the current frame, frames 7-13

Clips are the current frame and the next 12 of that camera at the model's resolution (padded with the last
frame past an episode's end; padded frames do not count in the loss). The last `held_out_episodes` episodes
never train: preview videos (real future beside the predicted one) come from them at intervals, and the final
evaluation scores the prediction frame by frame (PSNR) against the real frames there, next to the baseline
that copies the current frame. The output directory holds `model/` (`load_world_model`),
`checkpoints/`, `previews/step_N.mp4`, `evaluation.json` and the resolved `recipe.yaml`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml

from harmowam_core.config import Recipe
from harmowam_core.data.reader import split_episodes
from harmowam_core.data.windows import ClipDataset
from harmowam_core.errors import HarmoWAMError
from harmowam_core.models.world_model import WorldModelInterface, new_world_model
from harmowam_core.timing import Progress  # on_progress phases: "frames", "train", "preview", "evaluate"
from harmowam_core.training.loop import StepLog, TrainLoop, open_training_run, parse_log_with
from harmowam_core.training.reports import LATE_FROM, Evaluation, evaluate, write_preview


def world_model_camera(recipe: Recipe) -> str:
    """The camera the world model imagines: the front camera of a single arm, the global one of two."""
    return recipe.camera("front" if recipe.arms == "single" else "global").name


def flow_matching_loss(model, batch: dict) -> dict[str, torch.Tensor]:
    return {"loss": model(batch["video"], batch["instruction"], batch["video_is_pad"], previous=batch["previous"])}


# ------------------------------------------------------------------------------------------------ training
@dataclass
class WorldModelRun:
    out: Path
    model_dir: Path
    steps: int
    resumed_from: int
    train_clips: int
    held_out_episodes: list[int]
    previews: list[Path]
    evaluation: Evaluation


class WorldModelTrainer:
    """Checks the run (dataset, output directory, step cap) on construction, before anything heavy; `run`
    decodes the clips, trains, previews and evaluates."""

    def __init__(
        self,
        recipe: Recipe,
        data: str | Path,
        out: str | Path,
        resume: bool = False,
        max_steps: int | None = None,
        log_with: str | list[str] | None = None,
    ):
        self.recipe, self.out, self.resume, self.max_steps = recipe, Path(out), resume, max_steps
        self.log_with = parse_log_with(log_with)  # the experiment trackers (accelerate's log_with); none by default
        self.reader = open_training_run(data, self.out, resume, max_steps, recipe.data_mapping())
        self.camera = world_model_camera(recipe)
        if self.camera not in self.reader.cameras:
            raise HarmoWAMError(
                f"{self.reader.root}: no camera '{self.camera}' (the recipe's {recipe.arms}-arm world-model camera); "
                f"it has {', '.join(self.reader.cameras)}"
            )
        self.train_episodes, self.held_out = split_episodes(
            self.reader.num_episodes, max(1, recipe.train_wm.held_out_episodes)
        )
        spec = recipe.train_wm
        self.steps = spec.steps if max_steps is None else min(spec.steps, max_steps)

    def run(
        self, on_log: Callable[[StepLog], None] | None = None, on_progress: Progress | None = None
    ) -> WorldModelRun:
        recipe, out, reader, spec = self.recipe, self.out, self.reader, self.recipe.train_wm
        config = recipe.model_config.world_model
        torch.manual_seed(spec.seed)
        wm = new_world_model(recipe.model_config.world_model)
        train_set = ClipDataset(
            reader, self.camera, self.train_episodes, config.resolution, config.num_frames, on_progress=on_progress
        )
        held_set = ClipDataset(reader, self.camera, self.held_out, config.resolution, config.num_frames)
        run = {"stage": "wm", "data": str(reader.root), "camera": self.camera, "max_steps": self.max_steps}
        loop = TrainLoop(
            spec, out, wm, flow_matching_loss, train_set, max_steps=self.max_steps, log_with=self.log_with,
            config={**recipe.to_dict(), "run": run}, run_name="wm",
        )  # fmt: skip
        start = loop.resume() if self.resume else 0  # before the recipe is rewritten: a refused resume keeps it
        if loop.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            (out / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        previews: list[Path] = []

        def current_model() -> WorldModelInterface | None:
            """The weights so far on the main process (gathered there under FSDP), None on the others."""
            model = loop.trained_model(build=lambda: new_world_model(recipe.model_config.world_model))
            return model if loop.is_main_process else None

        def preview(loop: TrainLoop) -> None:
            model = current_model()
            if model is not None:
                path = write_preview(model, held_set, out / "previews" / f"step_{loop.step}.mp4", reader.fps)
                previews.append(path)
                if on_progress is not None:
                    on_progress("preview", loop.step, loop.total, path.name)

        loop.run(on_log=on_log, hooks=[(spec.preview_every, preview)])
        model = current_model()
        evaluation = None
        if model is not None:  # the main process
            model.save_pretrained(out / "model")
            previews.append(write_preview(model, held_set, out / "previews" / f"step_{loop.step}.mp4", reader.fps))
            evaluation = evaluate(model, held_set, batch_size=spec.batch_size, seed=spec.seed, on_progress=on_progress)
            report = {
                "camera": self.camera,
                "held_out_episodes": self.held_out,
                "steps": loop.step,
                "frames": list(range(2, config.num_frames + 1)),
                **asdict(evaluation),
                "late_frames": f"{LATE_FROM}-{config.num_frames}",
                "late_model_psnr": evaluation.late(evaluation.model_psnr),
                "late_copy_psnr": evaluation.late(evaluation.copy_psnr),
                "late_moving_model_psnr": evaluation.late(evaluation.moving_model_psnr),
                "late_moving_copy_psnr": evaluation.late(evaluation.moving_copy_psnr),
            }
            (out / "evaluation.json").write_text(json.dumps(report, indent=2))
        loop.accelerator.wait_for_everyone()
        return WorldModelRun(
            out=out,
            model_dir=out / "model",
            steps=loop.step,
            resumed_from=start,
            train_clips=len(train_set),
            held_out_episodes=self.held_out,
            previews=previews,
            evaluation=evaluation,
        )


def train_world_model(
    recipe: Recipe,
    data: str | Path,
    out: str | Path,
    resume: bool = False,
    max_steps: int | None = None,
    on_log=None,
    on_progress: Progress | None = None,
) -> WorldModelRun:
    return WorldModelTrainer(recipe, data, out, resume, max_steps).run(on_log, on_progress)
