"""Parallel simulator workers, seeds and shards: 1 and 2 workers give the same datasets and evaluations; seeds
are recorded and never reused; failures are one line naming the seed and keep what was committed; shards
merge into one run's results."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from harmowam_cli.main import app
from harmowam_core import collect as collect_module
from harmowam_core.collect import collect, plan_seeds
from harmowam_core.config import load_recipe
from harmowam_core.data.meta import used_seeds
from harmowam_core.data.reader import DatasetReader
from harmowam_core.data.summary import summarize
from harmowam_core.errors import HarmoWAMError
from harmowam_core.evaluation.report import merge_reports, read_report, write_outputs
from harmowam_core.evaluation.runner import evaluate
from harmowam_core.policy.bundle import export_bundle, untrained_run
from harmowam_core.workers import WorkerError, WorkerPool, check_workers, parse_shard, shard_share

runner = CliRunner()
STEPS = 12  # episode length in these tests: enough to move, short enough for a CPU


def short_recipe():
    recipe = load_recipe("stack_cans")
    recipe.max_episode_steps = STEPS
    return recipe


def episodes_table(root) -> dict:
    return pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pydict()


def dataset_digest(root) -> list:
    """Everything an episode holds: actions, states, decoded video frames, seed and OOD protocol."""
    reader = DatasetReader(root)
    rows = episodes_table(root)
    out = []
    for ep in range(reader.num_episodes):
        sl = reader.episode_slice(ep)
        frames = {c: reader.frames(ep, c, range(reader.lengths[ep])) for c in reader.cameras}
        out.append((reader.action[sl], reader.state[sl], frames, rows["seed"][ep], rows["ood"][ep]))
    return out


def assert_same_datasets(a, b) -> None:
    da, db = dataset_digest(a), dataset_digest(b)
    assert len(da) == len(db)
    for (a1, s1, f1, seed1, ood1), (a2, s2, f2, seed2, ood2) in zip(da, db, strict=True):
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(s1, s2)
        assert (seed1, ood1) == (seed2, ood2)
        for cam in f1:
            np.testing.assert_array_equal(f1[cam], f2[cam])


# ------------------------------------------------------------------------------------------- pure helpers
def test_shards_and_worker_counts():
    assert parse_shard(None) == (0, 1) and parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(HarmoWAMError, match="shard: takes i/N"):
            parse_shard(bad)
    assert [shard_share(10, (i, 4)) for i in range(4)] == [3, 3, 2, 2]
    assert check_workers(8, 3) == 3 and check_workers(None, 1) == 1
    with pytest.raises(HarmoWAMError, match="at least 1"):
        check_workers(0, 5)


def test_seeds_continue_past_the_dataset_and_shards_are_disjoint(tmp_path):
    take = lambda it, n: [next(it) for _ in range(n)]  # noqa: E731
    assert take(plan_seeds(None, (0, 1), set(), 3, tmp_path), 3) == [0, 1, 2]
    assert take(plan_seeds(None, (0, 1), {0, 1, 4}, 3, tmp_path), 3) == [5, 6, 7]
    shards = [set(take(plan_seeds(None, (i, 3), {0, 1, 2, 3}, 9, tmp_path), 9)) for i in range(3)]
    assert not (shards[0] & shards[1]) and not (shards[1] & shards[2]) and not (shards[0] & shards[2])
    assert min(min(s) for s in shards) == 4  # every shard continues past the seeds already used
    assert take(plan_seeds(100, (0, 1), {0, 1}, 9, tmp_path), 2) == [100, 101]
    with pytest.raises(HarmoWAMError, match=r"already holds episodes of seed\(s\) 4, 5; the first unused seed is 6"):
        plan_seeds(3, (0, 1), {4, 5}, 6, tmp_path)
    # episodes of a dataset written before seeds were kept: their scenes are unknown, so a --seed past them is asked
    with pytest.raises(HarmoWAMError, match="4 episode.s. recorded before scene seeds were kept.*pass --seed 12"):
        plan_seeds(None, (0, 1), set(), 3, tmp_path, unknown=4)
    assert take(plan_seeds(12, (0, 1), set(), 3, tmp_path, unknown=4), 2) == [12, 13]
    # a scene is a seed and an OOD protocol: seed 0 of the position protocol is not seed 0 in-domain
    rows = [{"seed": 0, "ood": "none"}, {"seed": 1, "ood": None}, {"seed": 0, "ood": "position"}]
    assert used_seeds(rows, "none") == {0, 1} and used_seeds(rows, "position") == {0} and used_seeds(rows) == {0, 1}


# ------------------------------------------------------------------------------------------- the pool
def test_pool_reports_results_errors_and_dead_workers():
    with WorkerPool(2, "worker_faults:Squares", (1,), threads=1) as pool:
        assert sorted(pool.run((x, x) for x in range(6))) == [(x, x * x + 1) for x in range(6)]
        pool.submit("bad", -2)
        with pytest.raises(WorkerError, match="ValueError: no square for -2") as err:
            pool.next_result()
        assert err.value.key == "bad"
    with WorkerPool(1, "worker_faults:Squares", (), threads=1) as pool:
        pool.submit(("episode", 7), -1)
        with pytest.raises(WorkerError, match=r"its worker process died \(exit code 3\)") as err:
            pool.next_result()
        assert err.value.key == ("episode", 7) and pool.outstanding == 0  # reported once, the job accounted for
    with (
        pytest.raises(HarmoWAMError, match="could not start: ModuleNotFoundError"),
        WorkerPool(1, "no_such_module:X", threads=1) as pool,
    ):
        pool.submit(0, 0)
        pool.next_result()


# ------------------------------------------------------------------------------------------- collection
@pytest.mark.sim
def test_collect_with_two_workers_writes_the_dataset_of_one(tmp_path):
    recipe = short_recipe()
    one = collect(recipe, tmp_path / "one", 3, keep_failures=True, workers=1)
    two = collect(recipe, tmp_path / "two", 3, keep_failures=True, workers=2)
    assert (one.saved, two.saved, two.workers) == (3, 3, 2)
    assert one.seeds == two.seeds == [0, 1, 2]
    assert_same_datasets(tmp_path / "one", tmp_path / "two")
    # a second run into the same dataset continues with new scenes (seeds 3, 4), never repeating one
    again = collect(recipe, tmp_path / "one", 2, keep_failures=True, workers=1)
    assert again.seeds == [3, 4]
    assert episodes_table(tmp_path / "one")["seed"] == [0, 1, 2, 3, 4]
    assert summarize(tmp_path / "one")["scenes"] == {"none": [0, 1, 2, 3, 4]}  # what `harmowam info` shows
    # an explicit seed that would reuse a scene is refused in one line, through the CLI too
    result = runner.invoke(app, ["collect", "--task", "stack_cans", "--episodes", "1", "--out",
                                 str(tmp_path / "one"), "--seed", "4", "--keep-failures"])  # fmt: skip
    assert result.exit_code == 2 and "already holds episodes of seed(s) 4" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.sim
def test_collect_shards_take_disjoint_seeds_and_merge(tmp_path):
    recipe = short_recipe()
    for i in range(2):
        stats = collect(recipe, tmp_path / f"s{i}", 3, keep_failures=True, shard=(i, 2), ood="position", workers=1)
        assert stats.seeds == ([0, 2] if i == 0 else [1])
    result = runner.invoke(app, ["dataset", "merge", str(tmp_path / "all"), str(tmp_path / "s0"), str(tmp_path / "s1")])
    assert result.exit_code == 0, result.output
    rows = episodes_table(tmp_path / "all")
    assert rows["seed"] == [0, 2, 1] and rows["ood"] == ["position"] * 3
    assert DatasetReader(tmp_path / "all").num_frames == 3 * STEPS


@pytest.mark.sim
@pytest.mark.parametrize(
    "workers, recorder, why",
    [
        (1, "FailingRecorder", "RuntimeError: the simulator became unstable"),
        (2, "FailingRecorder", "RuntimeError: the simulator became unstable"),
        (2, "CrashingRecorder", "its worker process died (exit code 3)"),
    ],
)
def test_a_failing_episode_is_one_line_naming_its_seed_and_keeps_the_committed(
    tmp_path, monkeypatch, workers, recorder, why
):
    monkeypatch.setattr(collect_module, "RECORDER", f"worker_faults:{recorder}")
    with pytest.raises(HarmoWAMError) as err:
        collect(short_recipe(), tmp_path / "d", 5, keep_failures=True, workers=workers)
    message = str(err.value)
    assert f"the episode of seed 2 failed: {why}" in message
    assert "\n" not in message and f"the 2 episode(s) before it are saved in {tmp_path / 'd'}" in message
    assert episodes_table(tmp_path / "d")["seed"] == [0, 1]
    assert not list((tmp_path / "d" / ".staging").glob("*"))  # nothing half-written is left behind


@pytest.fixture
def ctrl_c_raises():
    """Python's own Ctrl-C handler for the test: a suite started in the background by a non-interactive shell
    (`cmd &`) inherits SIGINT ignored, and Python then leaves it ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)  # None: set outside Python


@pytest.mark.sim
def test_ctrl_c_keeps_every_finished_episode(tmp_path, ctrl_c_raises):
    def interrupt(stats):
        if stats.saved == 1:
            os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C reaches the parent

    stats = collect(short_recipe(), tmp_path / "d", 6, keep_failures=True, workers=2, on_progress=interrupt)
    assert stats.interrupted and 1 <= stats.saved < 6
    seeds = episodes_table(tmp_path / "d")["seed"]
    assert seeds == sorted(seeds) and seeds[0] == 0 and len(seeds) == stats.saved
    assert DatasetReader(tmp_path / "d").num_episodes == stats.saved


# ------------------------------------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    untrained_run(root / "runs" / "stack_cans", load_recipe("stack_cans"), resolution=32)
    return export_bundle(root / "runs" / "stack_cans", root / "bundles", name="tiny")


def comparable(report) -> list[dict]:
    return [{k: v for k, v in r.to_dict().items() if k not in ("seconds", "video")} for r in report.results]


@pytest.mark.sim
def test_every_actor_sees_the_same_scenes_whatever_the_router_order(bundle, tmp_path):
    """Paired evaluation (issue 22, item 4): episode i of a protocol is the same scene for every router and the
    scripted expert, whichever order the routers are given in; and each router's episode is the same episode."""
    kwargs = dict(scripted=True, max_steps=4, videos=False)
    protocols = ["none", "background", "objects"]
    runs = [evaluate(bundle, protocols, routers, 2, 1000, tmp_path / "-".join(routers), **kwargs)
            for routers in (["gate", "predictive"], ["predictive", "gate"])]  # fmt: skip
    by_job = [{(r.actor, r.protocol, r.episode): r for r in run.results} for run in runs]
    assert by_job[0].keys() == by_job[1].keys() and len(by_job[0]) == 3 * 3 * 2
    for job, result in by_job[0].items():
        other = by_job[1][job]
        assert (result.scene_digest, result.action_digest) == (other.scene_digest, other.action_digest)
    scenes = {}
    for (_, protocol, episode), result in by_job[0].items():
        scenes.setdefault((protocol, episode), set()).add(result.scene_digest)
    assert all(len(digests) == 1 for digests in scenes.values())  # one scene per episode, whatever the actor
    assert len({next(iter(d)) for d in scenes.values()}) == len(scenes)  # and a different one for each


@pytest.mark.sim
def test_eval_with_two_workers_and_in_shards_equals_one_run(bundle, tmp_path):
    kwargs = dict(scripted=True, max_steps=STEPS, videos=False, policy_options={"execute_steps": 4})
    args = (bundle, ["none", "position"], ["gate"], 2, 1000)
    one = evaluate(*args, tmp_path / "one", workers=1, **kwargs)
    two = evaluate(*args, tmp_path / "two", workers=2, **kwargs)
    assert two.workers == 2 and len(one.results) == 8
    assert comparable(one) == comparable(two)  # same scenes, same actions (digests), same stages, same order
    assert len({r.action_digest for r in one.results}) > 1
    # three shards, merged in any order, give the one run's report and files
    dirs = []
    for i in (2, 0, 1):
        part = evaluate(*args, tmp_path / f"shard{i}", workers=1, shard=(i, 3), **kwargs)
        assert part.shard == [i, 3] and len(part.results) == len(range(i, 8, 3))
        write_outputs(part, tmp_path / f"shard{i}")
        dirs.append(tmp_path / f"shard{i}")
    result = runner.invoke(app, ["eval", "merge", *map(str, dirs), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    merged = read_report(tmp_path / "merged")
    assert merged.shard is None and comparable(merged) == comparable(one)
    write_outputs(one, tmp_path / "one")
    assert (tmp_path / "merged" / "results.csv").read_text() == (tmp_path / "one" / "results.csv").read_text()
    assert json.loads((tmp_path / "merged" / "results.json").read_text())["rows"] == [
        json.loads(json.dumps(r)) for r in one.to_dict()["rows"]
    ]
    # merge refuses a missing shard, a repeated one, and a shard of another evaluation, each in one line
    shards = [read_report(d) for d in dirs]
    with pytest.raises(HarmoWAMError, match=r"shard\(s\) 1/3 missing"):
        merge_reports(shards[:2], ["a", "b"])
    with pytest.raises(HarmoWAMError, match="b and a are both shard 2/3"):
        merge_reports([shards[0], shards[0]], ["a", "b"])
    other = read_report(dirs[1])
    other.seed = 2000
    with pytest.raises(HarmoWAMError, match="b is not a shard of the same evaluation as a: seed 2000"):
        merge_reports([shards[0], other, shards[2]], ["a", "b", "c"])
    other = read_report(dirs[1])
    other.settings["bundle"]["created"] = "another export"
    result = runner.invoke(app, ["eval", "merge", *map(str, dirs), "--out", str(dirs[0])])
    assert result.exit_code == 2 and "is one of the shards" in result.output
    result_text = runner.invoke(app, ["eval", "merge", str(dirs[0])]).output  # a lone shard of three
    assert "missing" in result_text and len(result_text.strip().splitlines()) == 1
    with pytest.raises(HarmoWAMError, match="not a shard of the same evaluation.*settings"):
        merge_reports([shards[0], other, shards[2]], ["a", "b", "c"])


@pytest.mark.sim
def test_deploy_with_two_workers_runs_the_episodes_of_one(bundle, tmp_path):
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"deploy{workers}"
        result = runner.invoke(app, ["deploy", str(bundle), "--episodes", "2", "--max-steps", "6",
                                     "--workers", str(workers), "--out", str(out)])  # fmt: skip
        assert result.exit_code == 0, result.output
        runs[workers] = json.loads((out / "episodes.json").read_text())
        assert sorted(p.name for p in out.glob("*.mp4")) == ["episode_000.mp4", "episode_001.mp4"]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "video")} for r in rows]  # noqa: E731
    assert strip(runs[1]) == strip(runs[2]) and [r["episode"] for r in runs[2]] == [0, 1]
    result = runner.invoke(app, ["deploy", str(bundle), "--backend", "real", "--dry-run", "--workers", "2"])
    assert result.exit_code == 2 and "applies to the simulator" in result.output
