"""Bad command lines are one line and exit code 2, never a traceback, and never start any work (issue 22, item
9): the cases a first run of 201 generated invocations found (10 tracebacks, 14 bad values accepted), each by
name, and a hypothesis property over generated ones (`bad_cli`, the generator benchmarks/bad_inputs.py runs
10,000 times)."""

from __future__ import annotations

import hashlib

import pytest
import yaml
from bad_cli import (
    Accepted,
    Workspace,
    bad_invocations,
    build_workspace,
    heavy_work_refused,
    run_invocation,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harmowam_core.errors import HarmoWAMError, ParameterError


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return build_workspace(tmp_path_factory.mktemp("bad_inputs"))


def run(ws: Workspace, args: list[str]):
    with heavy_work_refused():
        return run_invocation(args, ws.root)


# Each case of the first run: (arguments with {name} for a workspace path, text the one line must hold).
LISTED = [
    # tracebacks: --seed -1 on deploy, eval and collect
    ("deploy {bundle} --seed -1", "'--seed'"),
    ("eval {bundle} --seed -1", "'--seed'"),
    ("collect --task stack_cans --seed -1 --out {root}/new/c", "'--seed'"),
    # tracebacks: --out naming a file on train-wm, deploy, eval, collect and demo (and a folder under a file)
    ("train-wm stack_cans --data {dataset} --out {file}", "is a file"),
    ("deploy {bundle} --out {file}", "is a file"),
    ("eval {bundle} --out {file}", "is a file"),
    ("collect --task stack_cans --out {file}", "is a file"),
    ("demo --out {file}", "is a file"),
    ("eval {bundle} --out {under_file}", "is a file"),
    ("train-experts stack_cans --data {dataset} --wm {wm_run} --out {file}", "is a file"),
    ("reproduce stack_cans --out {file}", "is a file"),
    # tracebacks: label on a dataset whose info.json is {} or not JSON (and whose harmowam.json is not JSON)
    ("label {info_empty}", "info.json"),
    ("label {info_not_json}", "info.json"),
    ("label {meta_not_json}", "harmowam.json"),
    # accepted: -1 and 0 step counts; 0 no longer means "the default"
    ("deploy {bundle} --max-steps -1", "'--max-steps'"),
    ("eval {bundle} --max-steps 0", "'--max-steps'"),
    ("eval {bundle} --execute-steps 0", "'--execute-steps'"),
    ("deploy {bundle} --denoising-steps 0", "'--denoising-steps'"),
    ("eval {bundle} --execute-steps 13", "--execute-steps: must be 1..12"),
    ("eval {bundle} --async --execute-steps 9", "--execute-steps: must be 1..8"),
    # accepted: an --ood list with empty items, demo --eval-episodes 0
    ("eval {bundle} --ood none,,", "--ood"),
    ("demo --eval-episodes 0 --out {root}/new/d", "'--eval-episodes'"),
    # accepted: --set values the recipe now refuses, with its located line
    ("recipe show stack_cans --set train_wm.held_out_episodes=-1", "key 'train_wm.held_out_episodes'"),
    ("recipe show stack_cans --set model.overrides.world_model.num_layers=0", "world_model.num_layers"),
    ("recipe show stack_cans --set train_experts.lambda_pred=-1", "key 'train_experts.lambda_pred'"),
    ("recipe show stack_cans --set train_wm.seed=-1", "key 'train_wm.seed'"),
    ("train-wm stack_cans --data {dataset} --out {root}/new/w --set train_wm.seed=-1", "key 'train_wm.seed'"),
    # seeds past numpy's range
    ("eval {bundle} --seed 4294967295 --episodes 2", "--seed: seeds go up to 4294967295"),
    # empty datasets and videos shorter than their episodes
    ("label {no_episodes}", "no episodes"),
    ("train-wm stack_cans --data {no_episodes} --out {root}/new/e", "0 episode(s)"),
    ("train-wm stack_cans --data {short_videos} --out {root}/new/s", "the video lasts"),
    ("reproduce stack_cans --data {short_videos} --out {root}/new/r", "the video lasts"),
    # a bundle exported before the hashes, truncated: one line before anything loads or prints
    ("eval {old_truncated_bundle} --episodes 1", "truncated"),
    ("deploy {old_truncated_bundle}", "truncated"),
    # usage errors: one line naming the command
    ("eval {bundle} --seed abc", "harmowam eval: Invalid value for '--seed'"),
    ("eval {bundle} --no-such-option", "No such option"),
    ("collect", "Missing option '--task'"),
    ("eval merge", "harmowam eval merge: Missing argument"),
    # --wm: what is not a world model says so, naming only options that exist
    ("train-experts stack_cans --data {dataset} --wm {experts_run}", "train-wm"),
]


def _args(ws: Workspace, template: str) -> list[str]:
    return [part.format_map(_Paths(ws)) for part in template.split()]


class _Paths(dict):
    def __init__(self, ws: Workspace):
        super().__init__()
        self.ws = ws

    def __missing__(self, key: str) -> str:
        return str(self.ws.root) if key == "root" else getattr(self.ws, key)


@pytest.mark.parametrize(("template", "text"), LISTED, ids=[t for t, _ in LISTED])
def test_each_case_of_the_first_run_is_one_line_with_exit_code_2(ws, template, text):
    outcome = run(ws, _args(ws, template))
    assert outcome.ok, outcome.describe()
    assert text in outcome.lines[0], outcome.describe()
    assert "pass the recipe's world-model configuration" not in outcome.output


def test_generated_bad_invocations_are_one_line_with_exit_code_2(ws):
    """The property, on a sample of the generator's command lines: exit code 2, one `error:` line, no traceback,
    and the command's heavy work never reached."""

    @settings(
        max_examples=100,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def check(data):
        outcome = run(ws, data.draw(bad_invocations(ws), label="args"))
        assert outcome.ok, outcome.describe()

    check()


def _digest(root) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_bad_input_never_changes_what_is_already_written(ws):
    """Bad values aimed at the dataset, the run and the bundle leave every one of their files as it was."""
    targets = [ws.root / "data", ws.root / "runs", ws.root / "bundles"]
    before = [_digest(t) for t in targets]
    for template in (
        "label {dataset} --set gate.window=-1",
        "label {dataset} --window -3",
        "collect --task stack_cans --out {dataset} --seed 0",  # its episodes hold seeds 0-2
        "collect --task stack_cans --out {dataset} --episodes 0",
        "train-wm stack_cans --data {dataset} --out {wm_run} --max-steps 0",
        "train-experts stack_cans --data {dataset} --wm {wm_run} --out {experts_run} --set train_experts.steps=0",
        "export {runs} --bundles {bundles} --name tiny",
        "eval {bundle} --out {runs} --seed -5",
        "dataset merge {dataset} {dataset}",
    ):
        outcome = run(ws, _args(ws, template))
        assert outcome.ok, outcome.describe()
    assert [_digest(t) for t in targets] == before


def test_recipe_show_piped_is_valid_yaml(ws):
    """Piped into a file, `recipe show` wrapped long lines at 80 columns and was no longer YAML; it is printed as
    is, and --raw reads back as the same recipe."""
    from harmowam_core.config import load_recipe, recipe_from_data

    long = "instruction=" + " ".join(["stack the cans"] * 12)
    shown = run(ws, ["recipe", "show", "stack_cans", "--set", long])
    assert shown.exit_code == 0, shown.describe()
    recipe = load_recipe("stack_cans", [long])
    assert yaml.safe_load(shown.output) == yaml.safe_load(yaml.safe_dump(recipe.to_dict(resolved=True)))
    raw = run(ws, ["recipe", "show", "stack_cans", "--raw", "--set", long])
    again = recipe_from_data(yaml.safe_load(raw.output), "piped")
    assert again.to_dict() == recipe.to_dict() and again.instruction == recipe.instruction


def test_train_experts_takes_the_run_directory_train_wm_reports(ws):
    """`train-wm` reports runs/<task>/wm; `--wm` takes it, the task's run directory, the model directory inside and
    a bundle, and the trainer reads the model directory (training itself is refused here: `Accepted`)."""
    from harmowam_core.models.world_model import world_model_dir

    model = ws.root / "runs" / "stack_cans" / "wm" / "model"
    for wm in (ws.wm_run, ws.runs, str(model)):
        assert world_model_dir(wm) == model
        outcome = run(ws, ["train-experts", "stack_cans", "--data", ws.dataset, "--wm", wm, "--out", f"{ws.root}/new"])
        assert outcome.accepted, outcome.describe()
        assert str(model) in outcome.output.replace("\n", "")
    assert world_model_dir(ws.bundle).name == "world_model"
    with pytest.raises(HarmoWAMError, match="no trained world model") as err:
        world_model_dir(ws.experts_run)
    assert "--" not in str(err.value)  # names no option: the library cannot know which command asked


def test_zero_means_what_it_says_in_the_policy():
    from harmowam_core.policy.policy import plan_settings

    assert plan_settings(12, 5) == (0, 12, 5)  # None: the defaults
    assert plan_settings(12, 5, async_inference=True) == (4, 8, 5)
    assert plan_settings(12, 5, execute_steps=3, denoising_steps=2) == (0, 3, 2)
    for kwargs, parameter in (
        ({"execute_steps": 0}, "execute_steps"),
        ({"denoising_steps": 0}, "denoising_steps"),
        ({"execute_steps": 9, "async_inference": True}, "execute_steps"),
        ({"lead": 0, "async_inference": True}, "lead"),
    ):
        with pytest.raises(ParameterError) as err:
            plan_settings(12, 5, **kwargs)
        assert err.value.parameter == parameter


def test_the_generator_itself_tells_accepted_input_apart(ws):
    """A valid command line reaches the heavy work (`Accepted`), so an accepted bad one would be seen."""
    outcome = run(ws, ["collect", "--task", "stack_cans", "--episodes", "1", "--out", f"{ws.root}/new/ok"])
    assert outcome.accepted and not outcome.ok, outcome.describe()
    assert issubclass(Accepted, Exception)
