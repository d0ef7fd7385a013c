"""Generated bad `harmowam` command lines (issue 22, item 9): what tests/test_bad_inputs.py and
benchmarks/bad_inputs.py share.

- `build_workspace(root)`: things to point a command at: a file, an empty folder, a valid labelled stack_cans
  dataset, broken ones (info.json `{}` or not JSON, harmowam.json not JSON, no episodes, videos shorter than their
  episodes), a tiny untrained run (`runs/stack_cans`, `wm/` in it) and its exported bundle, a bundle with a broken
  bundle.json and an old (unhashed) bundle with truncated weights.
- `bad_invocations(ws)`: a hypothesis strategy of argument lists, each a valid command line of a command that
  checks its inputs before heavy work, with exactly one mistake: a path that does not exist, is a file or is the
  wrong kind of folder; a number that is negative, zero, too large or not a number; an unknown router, OOD
  protocol, backend, phase or recipe; a malformed or out-of-range `--set`; an unknown option or a missing argument.
- `run_invocation(args)`: runs one in-process (typer's CliRunner, the workspace as working directory) with the
  heavy work of every command refused (`heavy_work_refused`): a bad input that got through validation ends in
  `Accepted` instead of starting a collection, a training or an evaluation.

A good outcome is exit code 2 and one line, `error: ...`, and no traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import string
import traceback
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from hypothesis import strategies as st

MAX_SEED = 2**32 - 1


class Accepted(Exception):
    """Heavy work was reached: the bad input got through every check."""


# (module, attribute) of every command's heavy work, looked up when the command runs (after its checks):
# collecting (the pipeline's first phase, too), training, evaluating, deploying, loading a world model to export
# it, labelling, probing the real station. Merging datasets is left to run: its checks are inside, and small
# inputs merge fast.
HEAVY = (
    ("harmowam_core.collect", "collect"),
    ("harmowam_core.training.world_model", "WorldModelTrainer.run"),
    ("harmowam_core.training.experts", "ExpertsTrainer.run"),
    ("harmowam_core.evaluation.runner", "evaluate"),
    ("harmowam_core.evaluation.runner", "deploy"),
    ("harmowam_core.models.world_model", "load_world_model"),
    ("harmowam_cli.label", "label_dataset"),
    ("harmowam_core.envs.real.doctor", "run_checks"),
)


def _accepted(*args, **kwargs):
    raise Accepted("the bad input reached the command's heavy work")


@contextlib.contextmanager
def heavy_work_refused():
    """Within the block every command's heavy work raises `Accepted` instead of running. A module first imported
    inside the block binds the stand-in with `from ... import`; on leaving, such bindings get the real function
    back, so the stand-in never leaks into later tests (a lazily imported `phase_split` did)."""
    import importlib
    import sys

    originals = {}
    try:
        with contextlib.ExitStack() as stack:
            for module, attribute in HEAVY:
                owner = importlib.import_module(module)
                *classes, name = attribute.split(".")
                for cls in classes:
                    owner = getattr(owner, cls)
                if not classes:
                    originals[name] = getattr(owner, name)
                stack.enter_context(mock.patch.object(owner, name, _accepted))
            yield
    finally:
        for module in list(sys.modules.values()):
            namespace = getattr(module, "__dict__", {})
            for name, original in originals.items():
                if namespace.get(name) is _accepted:
                    setattr(module, name, original)


# --------------------------------------------------------------------------------------------- workspace
@dataclass(frozen=True)
class Workspace:
    root: Path

    def __getattr__(self, name: str) -> str:  # ws.dataset -> the absolute path of that thing, as a string
        path = PATHS.get(name)
        if path is None:
            raise AttributeError(name)
        return str(self.root / path)


PATHS = {
    "file": "a_file.txt",
    "under_file": "a_file.txt/inside",
    "missing": "no/such/thing",
    "empty_dir": "empty",
    "dataset": "data/stack_cans",
    "info_empty": "broken/info_empty",
    "info_not_json": "broken/info_not_json",
    "meta_not_json": "broken/meta_not_json",
    "no_episodes": "broken/no_episodes",
    "short_videos": "broken/short_videos",
    "runs": "runs/stack_cans",
    "wm_run": "runs/stack_cans/wm",
    "experts_run": "runs/stack_cans/experts",
    "bundles": "bundles",
    "bundle": "bundles/tiny",
    "bad_bundle_json": "broken_bundles/not_json",
    "old_truncated_bundle": "broken_bundles/old_truncated",
    "bad_yaml": "broken/bad.yaml",
}


def _write_dataset(root: Path, lengths: tuple[int, ...], label: bool = True) -> None:
    import numpy as np

    from harmowam_core.config import load_recipe
    from harmowam_core.data.format import DatasetSpec
    from harmowam_core.data.labels import LabelSettings, label_dataset
    from harmowam_core.data.writer import DatasetWriter

    recipe = load_recipe("stack_cans")
    spec = DatasetSpec(fps=10, num_arms=1, cameras={"front": (32, 32), "top": (32, 32), "wrist": (32, 32)})
    rng = np.random.default_rng(0)
    with DatasetWriter(root, spec, task_name="stack_cans", recipe=recipe.to_dict(resolved=False)) as writer:
        for seed, n in enumerate(lengths):
            with writer.episode(recipe.instruction) as ep:
                for t in range(n):
                    action = rng.normal(size=7).astype(np.float32)
                    action[6] = (t // 4) % 2
                    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                    ep.add_frame(action, rng.normal(size=7).astype(np.float32), {c: image for c in spec.cameras})
                ep.save([True, False], seed=seed, ood="none")
    if label and lengths:
        label_dataset(root, LabelSettings(window=2))


def build_workspace(root: Path) -> Workspace:
    """Every thing `PATHS` names, under `root` (6-10 s on 2 cores: a tiny untrained run and its bundle)."""
    from harmowam_cli._common import quiet_libraries
    from harmowam_core.config import load_recipe
    from harmowam_core.policy.bundle import export_bundle, untrained_run

    quiet_libraries()  # no tqdm bars of transformers / diffusers while the models are saved
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / PATHS["file"]).write_text("a file, not a folder\n")
    (root / PATHS["empty_dir"]).mkdir()
    data = root / PATHS["dataset"]
    _write_dataset(data, (12, 12, 12))
    for name, text in (("info_empty", "{}"), ("info_not_json", "{not json")):
        shutil.copytree(data, root / PATHS[name])
        (root / PATHS[name] / "meta" / "info.json").write_text(text)
    shutil.copytree(data, root / PATHS["meta_not_json"])
    (root / PATHS["meta_not_json"] / "meta" / "harmowam.json").write_text("[1, 2")
    _write_dataset(root / PATHS["no_episodes"], ())
    short = root / PATHS["short_videos"]  # the videos of a 2 x 4-frame dataset under a 3 x 12-frame one
    shutil.copytree(data, short)
    _write_dataset(root / "tmp_short", (4, 4))
    for video in (root / "tmp_short" / "videos").rglob("*.mp4"):
        shutil.copyfile(video, short / video.relative_to(root / "tmp_short"))
    shutil.rmtree(root / "tmp_short")
    (root / PATHS["bad_yaml"]).write_text("name: [unclosed\n")

    untrained_run(root / PATHS["runs"], load_recipe("stack_cans"), resolution=32)
    bundle = export_bundle(root / PATHS["runs"], root / PATHS["bundles"], name="tiny")
    broken = root / "broken_bundles"
    shutil.copytree(bundle, broken / "not_json")
    (broken / "not_json" / "bundle.json").write_text("{not json")
    old = broken / "old_truncated"
    shutil.copytree(bundle, old)
    meta = json.loads((old / "bundle.json").read_text())
    del meta["files"]  # exported before the hashes
    (old / "bundle.json").write_text(json.dumps(meta))
    weights = old / "experts" / "experts.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return Workspace(root)


# --------------------------------------------------------------------------------------------- outcomes
@dataclass
class Outcome:
    args: list[str]
    exit_code: int
    output: str
    traceback: str | None  # an exception that escaped the command (not SystemExit)
    accepted: bool  # the heavy work was reached

    @property
    def lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.strip()]

    @property
    def one_line(self) -> bool:
        return len(self.lines) == 1 and self.lines[0].startswith("error:")

    @property
    def ok(self) -> bool:
        return self.traceback is None and not self.accepted and self.exit_code == 2 and self.one_line

    def describe(self) -> str:
        what = "accepted (reached heavy work)" if self.accepted else f"exit {self.exit_code}"
        body = self.traceback or self.output
        return f"harmowam {' '.join(self.args)}: {what}\n{body}"


_runner = None


def run_invocation(args: list[str], cwd: Path) -> Outcome:
    """Run `harmowam ARGS` in-process in `cwd` (its defaults, data/ and bundles/, are the workspace's); call it
    inside `heavy_work_refused()`."""
    global _runner
    from typer.testing import CliRunner

    from harmowam_cli.main import app

    _runner = _runner or CliRunner()
    before = os.getcwd()
    os.chdir(cwd)
    try:
        result = _runner.invoke(app, args)
    finally:
        os.chdir(before)
    exc = result.exception
    accepted = isinstance(exc, Accepted)
    tb = None
    if exc is not None and not isinstance(exc, SystemExit | Accepted):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Outcome(list(args), result.exit_code, result.output, tb, accepted)


# --------------------------------------------------------------------------------------------- strategies
RECIPES = ("pick_fruit", "stack_cans", "pour_coke", "write_yes", "flowers", "bag_zip")
ROUTERS = ("gate", "predictive", "reactive", "average", "keyframe_average")
PROTOCOLS = ("none", "background", "position", "objects")
PHASES = ("collect", "label", "train-wm", "train-experts", "export", "eval", "interaction")
WORDS = string.ascii_letters + "_-.,:;/!?@ "


def _words(min_size: int = 0) -> st.SearchStrategy[str]:
    """Text without digits: never a number."""
    return st.text(alphabet=WORDS, min_size=min_size, max_size=12)


def not_an_integer() -> st.SearchStrategy[str]:
    fractions = st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()).map(repr)
    return st.one_of(_words(), fractions, st.sampled_from(["1.5", "1e3", "0x10", "nan", "inf", "", " ", "1/2", "3,4"]))


def below(minimum: int) -> st.SearchStrategy[str]:
    """An integer below `minimum`, or no integer at all."""
    return st.one_of(st.integers(max_value=minimum - 1).map(str), not_an_integer())


def bad_seed() -> st.SearchStrategy[str]:
    return st.one_of(st.integers(max_value=-1).map(str), st.integers(min_value=MAX_SEED + 1).map(str), not_an_integer())


def _not_one_of(valid) -> st.SearchStrategy[str]:
    return st.one_of(_words(), st.sampled_from(["", "GATE", "None", "gate ", "all", "*"])).filter(
        lambda x: x not in valid
    )


def bad_protocol_list() -> st.SearchStrategy[str]:
    """An `--ood` list `eval` refuses: an unknown name in it, or an empty item."""

    def valid(text: str) -> bool:
        items = [p.strip() for p in text.split(",")]
        return text == "all" or (bool(text.strip()) and all(p in PROTOCOLS for p in items))

    with_empty = st.lists(st.sampled_from(PROTOCOLS), max_size=3).flatmap(
        lambda items: st.permutations([*items, ""]).map(",".join)
    )
    return st.one_of(with_empty, _not_one_of(()), st.sampled_from(["none,,", ",", "none,bogus", "all,none"])).filter(
        lambda x: not valid(x)
    )


def bad_shard() -> st.SearchStrategy[str]:
    def valid(text: str) -> bool:
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            return False
        return n >= 1 and 0 <= i < n

    pairs = st.tuples(st.integers(-3, 6), st.integers(-3, 6)).map(lambda p: f"{p[0]}/{p[1]}")
    return st.one_of(pairs, _words(), st.sampled_from(["1", "1/2/3", "/", "a/b"])).filter(lambda x: not valid(x))


# `--set` values the recipe refuses, each with the one-line error's key
BAD_SETS = (
    "train_wm.held_out_episodes=-1",
    "train_wm.held_out_episodes=0",
    "model.overrides.world_model.num_layers=0",
    "train_experts.lambda_pred=-1",
    "train_wm.seed=-1",
    "train_wm.seed=4294967296",
    "train_wm.steps=0",
    "train_wm.learning_rate=0",
    "train_wm.weight_decay=.nan",
    "train_experts.lambda_react=.inf",
    "train_wm.warmup_steps=-5",
    "model.overrides.world_model.resolution=[0, 64]",
    "model.overrides.gate.dropout=1.5",
    "model.overrides.world_model.feature_block=9",
    "model.overrides.world_model.denoising_steps=0",
    "model.overrides.predictive_expert.inference_steps=-1",
    "model.preset=huge",
    "fps=0",
    "max_episode_steps=-1",
    "cameras.9.height=64",
    "cameras.0.height=15",
    "fps.x=1",
    "nosuch=1",
    "train_wm.nosuch=1",
    "train_wm.steps=abc",
    "train_wm.steps=true",
    "=1",
    "a..b=1",
    ".a=1",
    "train_wm.=1",
)
INT_KEYS = (
    "train_wm.steps",
    "train_wm.batch_size",
    "train_wm.held_out_episodes",
    "train_wm.grad_accum_steps",
    "train_wm.checkpoint_every",
    "train_experts.steps",
    "train_experts.window_stride",
    "fps",
    "max_episode_steps",
    "model.overrides.action_chunk",
    "model.overrides.world_model.num_layers",
    "model.overrides.world_model.num_frames",
    "model.overrides.predictive_expert.hidden_size",
    "model.overrides.gate.pool_grid",
)


def bad_set() -> st.SearchStrategy[str]:
    """A malformed or out-of-range `--set KEY=VALUE` for a recipe."""
    no_equals = _words(min_size=1).filter(lambda x: "=" not in x)
    non_positive = st.tuples(st.sampled_from(INT_KEYS), st.integers(max_value=0)).map(lambda kv: f"{kv[0]}={kv[1]}")
    negative = st.tuples(
        st.sampled_from(("train_wm.warmup_steps", "train_wm.num_workers", "train_experts.lambda_pred", "gate.window")),
        st.integers(max_value=-1),
    ).map(lambda kv: f"{kv[0]}={kv[1]}")
    return st.one_of(st.sampled_from(BAD_SETS), no_equals, non_positive, negative)


def bad_gate_set() -> st.SearchStrategy[str]:
    """A `--set` that `info` / `label` refuse without a recipe: only gate.* and data.*, with valid values."""
    return st.one_of(
        st.sampled_from(
            ["gate.window=-1", "gate.threshold=2", "gate.nosuch=1", "train_wm.steps=3", "data.action=", "gate=1"]
        ),
        bad_set().filter(lambda x: not x.startswith(("gate.", "data."))),
    )


@st.composite
def bad_invocations(draw, ws: Workspace) -> list[str]:  # noqa: C901 - one table of commands and their mistakes
    """One command line with one mistake (see the module docstring)."""
    new = str(ws.root / "new" / draw(st.text(alphabet=string.ascii_lowercase, min_size=8, max_size=8)))
    kind = draw(
        st.sampled_from(
            [
                "collect",
                "train-wm",
                "train-experts",
                "eval",
                "deploy",
                "demo",
                "reproduce",
                "export",
                "label",
                "info",
                "recipe",
                "dataset-merge",
                "eval-merge",
                "doctor",
                "usage",
            ]
        )
    )
    out_is_file = st.sampled_from([ws.file, ws.under_file])
    not_a_dataset = st.sampled_from(
        [ws.missing, ws.file, ws.under_file, ws.empty_dir, ws.info_empty, ws.info_not_json, ws.meta_not_json, ws.bundle]
    )
    unusable_dataset = st.sampled_from(
        [
            ws.missing,
            ws.file,
            ws.empty_dir,
            ws.info_empty,
            ws.info_not_json,
            ws.meta_not_json,
            ws.no_episodes,
            ws.short_videos,
        ]
    )
    not_a_bundle = st.sampled_from(
        [ws.missing, ws.file, ws.empty_dir, ws.dataset, ws.runs, ws.bad_bundle_json, ws.old_truncated_bundle]
    )

    def mistake(base: list[str], options: dict[str, st.SearchStrategy[str]]) -> list[str]:
        option = draw(st.sampled_from(sorted(options)))
        value = draw(options[option])
        if option.startswith("@"):  # a positional argument: replace the base's at that index
            index = int(option[1:])
            return [*base[:index], value, *base[index + 1 :]]
        if option == "--set":
            return [*base, "--set", value]
        if option in base:
            i = base.index(option)
            return [*base[: i + 1], value, *base[i + 2 :]]
        return [*base, option, value]

    if kind == "collect":
        base = ["collect", "--task", "stack_cans", "--episodes", "2", "--out", new]
        return mistake(
            base,
            {
                "--task": _not_one_of(RECIPES),
                "--episodes": below(1),
                "--seed": bad_seed(),
                "--workers": below(1),
                "--ood": _not_one_of(PROTOCOLS),
                "--out": out_is_file,
                "--backend": _not_one_of(("sim", "real")),
                "--teleop": _not_one_of(("scripted", "keyboard", "spacemouse")),
                "--shard": bad_shard(),
                "--set": bad_set(),
            },
        )
    if kind == "train-wm":
        base = ["train-wm", "stack_cans", "--data", ws.dataset, "--out", new]
        return mistake(
            base,
            {
                "--data": unusable_dataset,
                "--out": out_is_file,
                "--max-steps": below(1),
                "--set": bad_set(),
                "--log-with": st.sampled_from(["nosuch", "all", "tensorboard,nosuch"]),
                "@1": st.sampled_from(["nosuch", ws.file, ws.bad_yaml, ws.missing + ".yaml"]),
            },
        )
    if kind == "train-experts":
        base = ["train-experts", "stack_cans", "--data", ws.dataset, "--wm", ws.wm_run, "--out", new]
        return mistake(
            base,
            {
                "--data": unusable_dataset,
                "--wm": st.sampled_from([ws.missing, ws.file, ws.empty_dir, ws.dataset, ws.experts_run, ws.bundles]),
                "--out": out_is_file,
                "--max-steps": below(1),
                "--set": bad_set(),
            },
        )
    policy_options = {
        "--max-steps": below(1),
        "--execute-steps": st.one_of(below(1), st.integers(13, 10**6).map(str)),
        "--denoising-steps": below(1),
        "--workers": below(1),
        "--router": _not_one_of(ROUTERS),
        "--seed": bad_seed(),
        "--episodes": below(1),
        "--out": out_is_file,
        "--backend": _not_one_of(("sim", "real")),
        "@1": not_a_bundle,
    }
    if kind == "eval":
        base = ["eval", ws.bundle, "--episodes", "2", "--out", new]
        return mistake(base, {**policy_options, "--ood": bad_protocol_list(), "--shard": bad_shard()})
    if kind == "deploy":
        base = ["deploy", ws.bundle, "--out", new]
        options = {**policy_options, "--ood": _not_one_of(PROTOCOLS), "--arms": _not_one_of(("single",))}
        return mistake(base, options)
    if kind == "demo":
        base = ["demo", "--out", new]
        return mistake(
            base,
            {
                "--out": out_is_file,
                "--episodes": below(3),
                "--wm-steps": below(1),
                "--experts-steps": below(1),
                "--eval-episodes": below(1),
                "--max-steps": below(1),
                "--task": _not_one_of(RECIPES),
                "--set": bad_set(),
            },
        )
    if kind == "reproduce":
        base = ["reproduce", "stack_cans", "--out", new]
        return mistake(
            base,
            {
                "--out": out_is_file,
                "--episodes": below(3),
                "--eval-episodes": below(1),
                "--max-steps": below(1),
                "--workers": below(1),
                "--budget-minutes": st.sampled_from(["0", "-1", "nan", "inf", "-inf", "abc"]),
                "--restart-from": _not_one_of(PHASES),
                "--data": unusable_dataset.filter(lambda x: x != ws.no_episodes),  # it collects into an empty one
                "--set": bad_set(),
            },
        )
    if kind == "export":
        base = ["export", ws.runs, "--bundles", new]
        return mistake(
            base,
            {
                "@1": st.sampled_from([ws.missing, ws.file, ws.empty_dir, ws.dataset, ws.wm_run, ws.bundle]),
                "--bundles": out_is_file,
                "--snapshot": st.one_of(below(1), st.integers(1, 10**6).map(str)),  # the run keeps no snapshots
            },
        )
    if kind == "label":
        base = ["label", ws.dataset, "--dry-run"]
        return mistake(
            base,
            {
                "@1": st.one_of(not_a_dataset, st.sampled_from([ws.no_episodes, ws.short_videos])),
                "--window": below(0),
                "--recipe": st.sampled_from(["nosuch", ws.file, ws.bad_yaml]),
                "--set": st.one_of(bad_set(), st.sampled_from(["gate.window=-1", "gate.threshold=2", "data.action="])),
            },
        )
    if kind == "info":
        base = ["info", ws.dataset]
        return mistake(
            base,
            {
                "@1": not_a_dataset,
                "--recipe": st.sampled_from(["nosuch", ws.file, ws.bad_yaml]),
                "--set": bad_gate_set(),
            },
        )
    if kind == "recipe":
        base = ["recipe", "show", "stack_cans"]
        return mistake(
            base, {"@2": st.sampled_from(["nosuch", ws.file, ws.bad_yaml, ws.empty_dir]), "--set": bad_set()}
        )
    if kind == "dataset-merge":
        base = ["dataset", "merge", new, ws.dataset]
        return mistake(base, {"@2": out_is_file, "@3": not_a_dataset})
    if kind == "eval-merge":
        return ["eval", "merge", draw(st.sampled_from([ws.missing, ws.file, ws.empty_dir, ws.dataset, ws.bundle]))]
    if kind == "doctor":
        return ["doctor", "--station", draw(st.sampled_from([ws.missing, ws.empty_dir, ws.bad_yaml, ws.file]))]
    # usage: an unknown option, a missing argument or an unknown command
    return draw(
        st.sampled_from(
            [
                ["eval", ws.bundle, "--no-such-option"],
                ["collect"],
                ["train-wm"],
                ["recipe", "show"],
                ["eval", "merge"],
                ["deploy", ws.bundle, "--episodes"],
                ["no-such-command"],
                ["info", ws.dataset, "extra-argument"],
                ["--no-such-option"],
            ]
        )
    )
