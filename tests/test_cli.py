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
    assert set(typer.main.get_command(app).commands) == {"recipe", "label", "info"}


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
