"""The closed loop: an exported tiny random bundle drives simulated episodes with every router (sync and async),
records videos, and `deploy` / `eval` pick bundles and report; stage tables aggregate exactly."""

from __future__ import annotations

import csv
import hashlib
import json
import os

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from harmowam_cli.main import app
from harmowam_core.config import load_recipe
from harmowam_core.envs import make_env
from harmowam_core.envs.ood import parse_protocols
from harmowam_core.errors import HarmoWAMError
from harmowam_core.evaluation.report import EvalReport, stage_table, write_outputs
from harmowam_core.evaluation.rollout import EpisodeResult, PolicyActor, ScriptedActor, run_episode
from harmowam_core.evaluation.trace import read_trace
from harmowam_core.policy.bundle import bundle_recipe, export_bundle, untrained_run
from harmowam_core.policy.policy import HarmoWAMPolicy
from harmowam_core.policy.routers import ROUTERS

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("closed_loop")
    untrained_run(root / "runs" / "stack_cans", load_recipe("stack_cans"), resolution=32)
    return export_bundle(root / "runs" / "stack_cans", root / "bundles", name="tiny")


def frames_in(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_a_reloaded_bundle_drives_sim_episodes_with_every_router(bundle, tmp_path):
    recipe = bundle_recipe(bundle)
    with make_env(recipe) as env:
        for router in ROUTERS:
            with HarmoWAMPolicy.from_bundle(bundle, router=router, execute_steps=3) as policy:
                video = tmp_path / f"{router}.mp4"
                result = run_episode(env, PolicyActor(policy), seed=1000, max_steps=7, video=video, fps=recipe.fps)
                assert result.steps == 7 and len(result.stages) == 2 and not result.interrupted
                assert policy.plans == 3  # steps 0, 3 and 6
                assert sum(result.expert_steps.values()) == 7
                expected = {"predictive"} if router == "predictive" else {"reactive"} if router == "reactive" else None
                if expected:
                    assert set(result.expert_steps) == expected
                if router == "average":
                    assert set(result.expert_steps) == {"average"}
                assert frames_in(video) == 7
                assert set(policy.timings) == {
                    "world model", "image encoder", "gate", "predictive expert", "reactive expert"
                }  # fmt: skip


@pytest.mark.parametrize("options", [{"execute_steps": 4}, {"async_inference": True, "lead": 2}])
def test_rendering_only_the_frames_the_policy_reads_changes_no_action(bundle, tmp_path, options):
    """Without a video, a step renders only when the policy will read its images (`needs_images`); every action
    is the same as when every step renders (a video needs them all)."""
    recipe = bundle_recipe(bundle)
    rendered = {}
    with make_env(recipe) as env:
        step = env.step

        def counting(action, images=True):
            obs = step(action, images=images)
            assert bool(obs.images) == images  # no images where none were asked for
            rendered[mode] += images
            return obs

        env.step = counting
        digests = {}
        for mode in ("video", "lazy"):
            rendered[mode] = 0
            with HarmoWAMPolicy.from_bundle(bundle, router="gate", **options) as policy:
                video = tmp_path / "v.mp4" if mode == "video" else None
                run = run_episode(env, PolicyActor(policy), seed=1001, max_steps=13, video=video)
                digests[mode] = run.action_digest
    assert digests["lazy"] == digests["video"]
    assert rendered["video"] == 13
    # observation k is the one act k reads (0: the reset's, always rendered). Sync, execute 4: the plans of acts
    # 4, 8 and 12 read observations 3-4, 7-8 and 11-12. Async, lead 2, 10 executed: act 8 plans from 7-8
    assert rendered["lazy"] == (6 if "lead" not in options else 2)


def test_async_mode_executes_the_chunk_planned_lead_steps_ahead(bundle):
    chunks = []

    class Counting(HarmoWAMPolicy):
        def plan(self, images, state, instruction, previous=None, previous_state=None):
            base = super().plan(images, state, instruction, previous, previous_state)
            base.chunk = np.full((12, 7), float(len(chunks))) + np.arange(12)[:, None] / 100
            chunks.append(base.chunk)
            return base

    policy = Counting.from_bundle(bundle, async_inference=True, lead=4)
    assert policy.execute_steps == 8
    obs = _observation()
    actions = [policy.act(obs)[0] for _ in range(20)]
    policy.close()
    # chunk 0 from step 0: its actions 0-7; chunk 1 started with 4 actions to go: its actions 4-11; and so on
    expected = (
        [0 + k / 100 for k in range(8)] + [1 + k / 100 for k in range(4, 12)] + [2 + k / 100 for k in (4, 5, 6, 7)]
    )
    np.testing.assert_allclose(actions, expected)
    assert len(chunks) == 3
    with pytest.raises(HarmoWAMError, match="execute_steps"):
        HarmoWAMPolicy.from_bundle(bundle, async_inference=True, lead=4, execute_steps=10)


def _observation():
    from harmowam_core.envs.base import Observation

    rng = np.random.default_rng(0)
    images = {c: rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) for c in ("front", "top", "wrist")}
    return Observation(images, np.zeros(7, np.float32), "stack the cans")


def test_ctrl_c_ends_an_episode_cleanly_with_a_readable_video(bundle, tmp_path):
    class Interrupting(ScriptedActor):
        def act(self, obs):
            if self.calls == 4:
                raise KeyboardInterrupt
            self.calls += 1
            return super().act(obs)

    actor = Interrupting()
    actor.calls = 0
    with make_env(bundle_recipe(bundle)) as env:
        result = run_episode(env, actor, seed=0, max_steps=50, video=tmp_path / "v.mp4")
    assert result.interrupted and result.steps == 4
    assert frames_in(tmp_path / "v.mp4") == 4


def result(actor, protocol, stages, episode=0):
    return EpisodeResult(actor, protocol, episode, 1000 + episode, stages, 10, 1.0)


def test_stage_tables_aggregate_exactly():
    results = [
        result("gate", "none", [True, True], 0),
        result("gate", "none", [True, False], 1),
        result("gate", "none", [False, False], 2),
        result("gate", "none", [True, False], 3),
        result("predictive", "none", [False, False]),
        result("gate", "position", [True, True]),
    ]
    rows = stage_table(results, ["beside", "on_top"], ["gate", "predictive", "scripted"], ["none", "position"])
    assert [(r.actor, r.protocol, r.episodes) for r in rows] == [
        ("gate", "none", 4),
        ("gate", "position", 1),
        ("predictive", "none", 1),
    ]
    assert rows[0].stage_rates == [0.75, 0.25] and rows[0].avg == 0.5 and rows[0].success == 0.25
    assert rows[1].stage_rates == [1.0, 1.0] and rows[2].stage_rates == [0.0, 0.0]
    assert parse_protocols("all") == ["none", "background", "position", "objects"]
    assert parse_protocols("none,position") == ["none", "position"]
    for bad in ("indoors", "none,,", ""):
        with pytest.raises(HarmoWAMError, match="OOD protocols are"):
            parse_protocols(bad)


def test_outputs_are_json_csv_and_png(tmp_path):
    report = EvalReport("b", "stack_cans", ["beside", "on_top"], ["none"], ["gate", "scripted"], 2, 1000)
    report.results = [result("gate", "none", [True, False]), result("scripted", "none", [True, True])]
    paths = write_outputs(report, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["rows"][0]["stage_rates"] == [1.0, 0.0] and len(data["results"]) == 2
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [(r["actor"], r["beside"], r["on_top"], r["avg"]) for r in rows] == [
        ("gate", "1.0000", "0.0000", "0.5000"),
        ("scripted", "1.0000", "1.0000", "1.0000"),
    ]
    assert Image.open(paths["png"]).size[0] >= 480


def test_the_chart_is_also_saved_as_pdf_and_svg_for_a_paper(tmp_path):
    report = EvalReport("b", "stack_cans", ["beside", "on_top"], ["none", "position"], ["gate", "predictive"], 1, 1000)
    report.results = [result("gate", "none", [True, False]), result("predictive", "position", [True, True])]
    paths = write_outputs(report, tmp_path)
    assert [paths[k].name for k in ("png", "pdf", "svg")] == ["success.png", "success.pdf", "success.svg"]
    assert all(paths[k].stat().st_size > 0 for k in ("png", "pdf", "svg"))
    assert paths["pdf"].read_bytes().startswith(b"%PDF")
    svg = paths["svg"].read_text()
    assert "<svg" in svg and "in-domain" in svg and "predictive" in svg  # text stays text
    again = write_outputs(report, tmp_path / "again")
    assert all(again[k].read_bytes() == paths[k].read_bytes() for k in ("pdf", "svg"))  # no creation date


def test_deploy_and_eval_pick_the_newest_bundle_or_fail_clearly(bundle, tmp_path):
    empty = tmp_path / "none"
    for command in ("deploy", "eval"):
        out = runner.invoke(app, [command, "--bundles", str(empty)])
        assert out.exit_code == 2 and "harmowam export" in out.output
        assert len(out.output.strip().splitlines()) == 1
    bundles = bundle.parent
    older = export_bundle(bundle.parent.parent / "runs" / "stack_cans", bundles, name="older")
    os.utime(older / "bundle.json", (1e9, 1e9))
    args = ["--bundles", str(bundles), "--max-steps", "3", "--seed", "5"]
    out = runner.invoke(app, ["deploy", *args, "--out", str(tmp_path / "deploy")])
    assert out.exit_code == 0, out.output
    assert f"newest bundle: {bundle}" in out.output.replace("\n", "")
    episodes = json.loads((tmp_path / "deploy" / "episodes.json").read_text())
    assert episodes[0]["steps"] == 3 and episodes[0]["seed"] == 5
    assert frames_in(tmp_path / "deploy" / "episode_000.mp4") == 3
    out = runner.invoke(
        app,
        ["eval", *args, "--ood", "position", "--router", "gate", "--router", "reactive", "--episodes", "2",
         "--no-videos", "--traces", "--out", str(tmp_path / "eval")],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    data = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert [(r["actor"], r["protocol"], r["episodes"]) for r in data["rows"]] == [
        ("gate", "position", 2),
        ("reactive", "position", 2),
    ]
    assert [r["seed"] for r in data["results"]] == [5, 5, 6, 6]  # the routers see the same scenes
    for result in data["results"]:  # each trace holds exactly the actions the episode executed
        assert result["trace"] == str(
            tmp_path / "eval" / "traces" / result["actor"] / "position" / f"episode_{result['episode']:03d}.parquet"
        )
        table = read_trace(result["trace"])
        assert table.schema.metadata == {b"ended": b"finished", b"steps": b"3"}
        trace = table.to_pydict()
        actions = np.asarray(trace["action"], dtype=np.float32)
        assert trace["frame_index"] == [0, 1, 2]
        assert hashlib.sha1(actions.tobytes()).hexdigest() == result["action_digest"]
        assert None not in trace["gate.probability"]  # every router's plans carry the gate's p(interaction)
        assert None not in trace["transit_target"]
    assert "traces " in out.output.replace("\n", "")
    out = runner.invoke(app, ["eval", str(older), "--router", "vote"])
    assert out.exit_code == 2 and "router" in out.output
    out = runner.invoke(app, ["deploy", "--bundles", str(bundles), "--arms", "dual"])
    assert out.exit_code == 2 and "dual-arm" in out.output


def test_a_dual_arm_bundle_drives_the_dual_arm_station(tmp_path):
    recipe = load_recipe("flowers")
    run = untrained_run(tmp_path / "runs" / "flowers", recipe, resolution=32)
    bundle = export_bundle(run, tmp_path / "bundles", name="dual")
    with make_env(bundle_recipe(bundle)) as env, HarmoWAMPolicy.from_bundle(bundle, execute_steps=2) as policy:
        assert policy.camera == "global"
        result = run_episode(env, PolicyActor(policy), seed=1000, max_steps=3, video=tmp_path / "d.mp4")
        assert result.steps == 3 and policy.last_plan.chunk.shape == (12, 14) and policy.plans == 2
    assert frames_in(tmp_path / "d.mp4") == 3


def test_an_actor_plans_afresh_after_a_station_reports_a_recovery():
    """A real station's observation after an arm recovered from a reflex (`info["recovered"]`): the chunk
    planned before is stale, so `run_episode` resets the actor."""
    from harmowam_core.envs.base import Observation
    from harmowam_core.evaluation.rollout import run_episode

    class Station:
        operator_ended = False

        def reset(self, seed=None, ood="none"):
            self.steps = 0
            return Observation({}, np.zeros(7), "x")

        def step(self, action, images=True):
            self.steps += 1
            return Observation({}, np.zeros(7), "x", info={"recovered": self.steps == 2})

        def stage_success(self):
            return [False]

        def end_episode(self):
            return [False]

        def stop(self):
            pass

    class Actor:
        name, resets = "gate", 0

        def reset(self, env):
            self.resets += 1

        def act(self, obs):
            return np.zeros(7)

        def status(self):
            return "predictive", 1.0

        def imagined(self):
            return None

        def needs_images(self):
            return True

    actor = Actor()
    run_episode(Station(), actor, seed=0, max_steps=4)
    assert actor.resets == 2  # the episode's start, and after the recovery at step 2
