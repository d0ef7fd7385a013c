"""The default layout the commands share (`harmowam_core.workspace`)."""

from __future__ import annotations

from pathlib import Path

from harmowam_core.workspace import DEFAULT, Workspace


def test_the_default_layout_and_a_rooted_one():
    assert DEFAULT.data("stack_cans") == Path("data/stack_cans")
    assert DEFAULT.wm_model("stack_cans") == Path("runs/stack_cans/wm/model")
    assert DEFAULT.experts_run("stack_cans") == Path("runs/stack_cans/experts")
    assert DEFAULT.bundles == Path("bundles")
    demo = Workspace(Path("demo"))
    assert demo.data("pour_coke") == Path("demo/data/pour_coke")
    assert demo.eval_run("b").parent == Path("demo/runs/eval") and demo.eval_run("b").name.startswith("b-")
    assert demo.deploy_run("b").parent == Path("demo/runs/deploy")
