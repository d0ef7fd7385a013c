import json

import typer
from typer.testing import CliRunner

from harmowam_cli.main import app

runner = CliRunner()


def test_help_lists_the_built_commands_only():
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0
    for cmd in ("recipe", "label", "info"):
        assert cmd in out.output
    # Only built commands are registered: nothing planned-but-absent is advertised.
    assert set(typer.main.get_command(app).commands) == {
        "recipe",
        "collect",
        "label",
        "info",
        "train-wm",
        "train-experts",
        "export",
        "deploy",
        "eval",
        "demo",
        "reproduce",
        "doctor",
        "dataset",
    }


def test_label_uses_the_recorded_task_recipe_and_prints_a_summary(make_dataset):
    root, _ = make_dataset(lengths=(21, 14))
    dry = runner.invoke(app, ["label", str(root), "--dry-run", "--window", "2"])
    assert dry.exit_code == 0, dry.output
    assert "recipes" in dry.output and "stack_cans.yaml" in dry.output  # gate settings from the task's recipe
    assert "dry run" in dry.output and "interaction" in dry.output
    assert runner.invoke(app, ["info", str(root), "--json"]).exit_code == 0
    assert json.loads(runner.invoke(app, ["info", str(root), "--json"]).output)["labels"]["feature"] is False
    out = runner.invoke(app, ["label", str(root), "--set", "gate.window=3"])
    assert out.exit_code == 0, out.output
    summary = json.loads(runner.invoke(app, ["info", str(root), "--json"]).output)
    assert summary["labels"]["settings"]["window"] == 3
    assert summary["labels"]["labelled_episodes"] == 2


def test_info_reports_episodes_cameras_and_stage_success(make_dataset):
    root, _ = make_dataset(lengths=(5, 6, 7), stage_success=[[True, False], [True, True], [False, False]])
    out = runner.invoke(app, ["info", str(root)])
    assert out.exit_code == 0, out.output
    assert "front 32x48 h264" in out.output and "18 at 10 fps" in out.output
    summary = json.loads(runner.invoke(app, ["info", str(root), "--json"]).output)
    assert summary["episodes"] == 3 and summary["frames"] == 18
    assert [(s["name"], round(s["success_rate"], 3)) for s in summary["stages"]] == [
        ("beside", 0.667),
        ("on_top", 0.333),
    ]


def test_user_errors_are_one_line_with_exit_code_2(tmp_path):
    for args in (
        ["info", str(tmp_path / "missing")],
        ["label", str(tmp_path / "missing")],
        ["label", str(tmp_path), "--recipe", "nope"],
    ):
        out = runner.invoke(app, args)
        assert out.exit_code == 2, (args, out.output)
        assert out.output.strip().startswith("error:") and len(out.output.strip().splitlines()) == 1
        assert "Traceback" not in out.output


def test_label_prefers_the_recipe_recorded_in_the_dataset(tmp_path):
    import numpy as np

    from harmowam_core.config import load_recipe
    from harmowam_core.data.format import DatasetSpec
    from harmowam_core.data.reader import DatasetReader
    from harmowam_core.data.writer import DatasetWriter

    recipe = load_recipe("flowers", ["gate.height_thresholds=[0.25]", "gate.window=1"])
    root = tmp_path / "flowers"
    spec = DatasetSpec(fps=10, num_arms=2, cameras={"global": (16, 16)})
    with DatasetWriter(root, spec, task_name="flowers", recipe=recipe.to_dict(resolved=False)) as writer:
        with writer.episode(recipe.instruction) as ep:
            for t in range(10):
                state = np.zeros(14)
                state[9] = 0.3 if t < 5 else 0.2  # the right arm's z crosses 0.25 at frame 5
                ep.add_frame(np.zeros(14), state, {"global": np.zeros((16, 16, 3), np.uint8)})
            ep.save([True, False, False])
    out = runner.invoke(app, ["label", str(root)])
    assert out.exit_code == 0, out.output
    assert "recorded recipe" in out.output
    labels = DatasetReader(root).interaction
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
