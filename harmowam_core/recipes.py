"""Task recipes: one YAML file per task describes the station, the stages, gate labelling, OOD protocols,
the model preset and the training settings of both stages.

    recipe = load_recipe("stack_cans", overrides=["train_wm.steps=200"])
    recipe.model_config.world_model.num_frames  # 13

A recipe is validated strictly: an unknown key, a wrong type, a missing field, overlapping position regions
or an unknown preset raise `RecipeError`, whose message names the file, the dotted key and what was expected.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from harmowam_core.errors import RecipeError
from harmowam_core.presets import PRESETS, ModelConfig

ARM_CAMERA_ROLES = {
    "single": {"front", "top", "wrist"},
    "dual": {"global", "wrist_left", "wrist_right"},
}


# --------------------------------------------------------------------------------------------- schema
@dataclass
class CameraSpec:
    name: str
    role: Literal["front", "top", "wrist", "global", "wrist_left", "wrist_right"]
    height: int
    width: int


@dataclass
class StageSpec:
    name: str
    success: str  # what success means (paper appendix B); the simulator implements it as a predicate


@dataclass
class GateSpec:
    """Gate labelling (paper D.3) and routing."""

    window: int = 20  # frames either side of a keyframe labelled interaction
    height_thresholds: list[float] = field(default_factory=list)  # end-effector z (m); a crossing is a key event
    gripper_closed_above: float = 0.5  # gripper action channel: 0 open, 1 closed
    threshold: float = 0.5  # routing: p(interaction) >= threshold -> predictive expert


@dataclass
class DataSpec:
    """Which features of the dataset this recipe trains on (`data:`; `--set data.cameras.front=KEY`): needed
    only for datasets recorded elsewhere, e.g. by LeRobot, whose keys are not HarmoWAM's.

    cameras: camera role -> the dataset's image or video feature key (`observation.images.laptop`); the camera
    of that role is read from it, and only mapped cameras are read. Empty: the dataset's cameras by name.
    action / state: the feature keys the experts learn and read (at the dataset's own dimensions).
    gripper: channels of the action that command a gripper; height: channels of the state that are an
    end-effector height (both for `harmowam label`; null: HarmoWAM's 7-per-arm layout)."""

    cameras: dict[str, str] = field(default_factory=dict)
    action: str = "action"
    state: str = "observation.state"
    gripper: list[int] | None = None
    height: list[int] | None = None

    def to_mapping(self, names: dict[str, str] | None = None):
        """The reader's `DataMapping`; `names`: camera role -> the recipe's camera name (default the role)."""
        from harmowam_core.data.format import DataMapping  # not at the top: recipes load before pyarrow

        names = names or {}
        cameras = {names.get(role, role): key for role, key in self.cameras.items()}
        return DataMapping(
            cameras=cameras, action=self.action, state=self.state, gripper=self.gripper, height=self.height
        )


@dataclass
class Region:
    """An axis-aligned rectangle on the table plane, metres in the table frame."""

    x: list[float]
    y: list[float]

    def overlaps(self, other: Region) -> bool:
        return self.x[0] < other.x[1] and other.x[0] < self.x[1] and self.y[0] < other.y[1] and other.y[0] < self.y[1]

    def contains(self, x: float, y: float) -> bool:
        return self.x[0] <= x <= self.x[1] and self.y[0] <= y <= self.y[1]


@dataclass
class BackgroundOOD:
    distractors: list[int] = field(default_factory=lambda: [5, 8])  # inclusive count range
    light_intensity: list[float] = field(default_factory=lambda: [0.4, 1.6])  # scale range, never 1 +- 0.2
    light_direction_deg: float = 35.0  # how far the key light's direction turns


@dataclass
class PositionOOD:
    train_region: Region
    test_region: Region


@dataclass
class ObjectsOOD:
    substitutes: dict[str, str]  # target object -> substitute of different appearance and geometry


@dataclass
class OODSpec:
    background: BackgroundOOD
    position: PositionOOD
    objects: ObjectsOOD


@dataclass
class ModelSpec:
    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainSpec:
    """What both training stages share: one accelerate loop, its optimiser, precision, checkpoints, split."""

    steps: int = 2000
    batch_size: int = 8
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    lr_schedule: Literal["constant", "cosine"] = "constant"  # after the warmup; cosine decays to 0 at `steps`
    grad_accum_steps: int = 1
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    ema_decay: float = 0.0  # 0 disables EMA
    checkpoint_every: int = 500
    held_out_episodes: int = 2
    num_workers: int = 0
    seed: int = 0
    max_minutes: float | None = None  # wall-clock cap on the training loop (resumed runs count earlier time)


@dataclass
class TrainWMSpec(TrainSpec):
    """Stage 1: world-model fine-tuning with conditional flow matching."""

    lr_schedule: Literal["constant", "cosine"] = "cosine"  # the tiny model's samples settle as the rate decays
    preview_every: int = 1000


@dataclass
class TrainExpertsSpec(TrainSpec):
    """Stage 2: predictive expert, reactive expert and gate, world model frozen (loss l1*pred + l2*react + gate)."""

    ema_decay: float = 0.995  # the evaluated weights are an exponential moving average of the trained ones
    window_stride: int = 4  # a training window starts at every k-th frame: the world model imagines each once
    # (on 2 CPU cores about 0.07 s a window, the largest cost of stage 2); with a 12-action chunk every action
    # is still learned, in 12 / k windows. 1: every frame
    lambda_pred: float = 1.0
    lambda_react: float = 1.0
    reactive_on_real_frames: bool = False
    snapshot_every: int = 0  # also keep the trained (EMA) weights every N steps in snapshots/step_N/, for choosing
    # the evaluated model by closed-loop success (`harmowam export --snapshot N`); 0: the final model only


@dataclass
class Recipe:
    name: str
    arms: Literal["single", "dual"]
    instruction: str
    fps: int
    max_episode_steps: int
    cameras: list[CameraSpec]
    stages: list[StageSpec]
    ood: OODSpec
    gate: GateSpec = field(default_factory=GateSpec)
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train_wm: TrainWMSpec = field(default_factory=TrainWMSpec)
    train_experts: TrainExpertsSpec = field(default_factory=TrainExpertsSpec)
    # Filled in by the loader: the preset with its overrides applied, and where the recipe came from.
    model_config: ModelConfig = field(default_factory=ModelConfig, metadata={"derived": True})
    source: str = field(default="<memory>", metadata={"derived": True})

    @property
    def num_arms(self) -> int:
        return 2 if self.arms == "dual" else 1

    @property
    def action_dim(self) -> int:
        return 7 * self.num_arms

    def data_mapping(self):
        """The `data:` section as the reader's `DataMapping`, camera roles turned into this recipe's names."""
        return self.data.to_mapping({cam.role: cam.name for cam in self.cameras})

    def camera(self, role: str) -> CameraSpec:
        for cam in self.cameras:
            if cam.role == role:
                return cam
        raise KeyError(role)

    def to_dict(self, resolved: bool = True) -> dict:
        """Plain data for YAML/JSON. `resolved` adds the model configuration the preset resolves to."""
        out = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("derived"):
                continue
            out[f.name] = _plain(getattr(self, f.name))
        if resolved:
            out["model"] = {"preset": self.model.preset, **_plain(self.model_config)}
        return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------- typed loading
def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0])}"
    if origin is dict:
        return f"a mapping of {_describe(args[0])} to {_describe(args[1])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in _input_fields(tp))
    if tp is Any:
        return "any value"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _input_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("derived")]


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def convert(tp: Any, value: Any, key: str, source: str) -> Any:
    """Convert plain YAML data to `tp`, raising RecipeError(source, key, ...) on the first mismatch."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    expected = "expected " + _describe(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(arg, value, key, source)
            except RecipeError:
                continue
        raise RecipeError(source, key, expected, value)
    if origin is Literal:
        if value in args and type(value) is type(args[args.index(value)]):
            return value
        raise RecipeError(source, key, expected, value)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(source, key, expected, value)
        return [convert(args[0], v, f"{key}.{i}", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(source, key, expected, value)
        return {
            convert(args[0], k, f"{key}.{k}", source): convert(args[1], v, f"{key}.{k}", source)
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(source, key, expected, value)
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in _input_fields(tp)}
        for k in value:
            if k not in fields:
                sub = f"{key}.{k}" if key else str(k)
                raise RecipeError(source, sub, "unknown key; expected one of " + ", ".join(fields), show_got=False)
        kwargs = {}
        for name, f in fields.items():
            sub = f"{key}.{name}" if key else name
            if name in value:
                kwargs[name] = convert(hints[name], value[name], sub, source)
            elif _required(f):
                raise RecipeError(source, sub, "missing; expected " + _describe(hints[name]), show_got=False)
        return tp(**kwargs)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(source, key, expected, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise RecipeError(source, key, expected, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            return float(value)  # PyYAML reads 1e-3 (no dot) as a string; everyone writes it
        raise RecipeError(source, key, expected, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise RecipeError(source, key, expected, value)
    raise TypeError(f"unsupported schema type {tp!r} at {key}")  # a bug in the schema, not the recipe


# --------------------------------------------------------------------------------------------- semantics
def _check(cond: bool, source: str, key: str, expected: str, got: Any = None) -> None:
    if not cond:
        raise RecipeError(source, key, expected, got)


def _check_range(pair: list, source: str, key: str, *, lo=None, hi=None, strict=True) -> None:
    _check(len(pair) == 2, source, key, "expected a [low, high] pair", pair)
    ok = pair[0] < pair[1] if strict else pair[0] <= pair[1]
    _check(ok, source, key, "expected low < high" if strict else "expected low <= high", pair)
    if lo is not None:
        _check(pair[0] >= lo, source, key, f"expected values >= {lo}", pair)
    if hi is not None:
        _check(pair[1] <= hi, source, key, f"expected values <= {hi}", pair)


def _validate(r: Recipe) -> None:
    s = r.source
    _check(r.name.replace("_", "").isalnum(), s, "name", "expected a task name of letters, digits and _", r.name)
    _check(bool(r.instruction.strip()), s, "instruction", "expected a non-empty instruction")
    _check(r.fps > 0, s, "fps", "expected a positive control rate", r.fps)
    _check(r.max_episode_steps > 0, s, "max_episode_steps", "expected a positive step count", r.max_episode_steps)
    _check(len(r.cameras) > 0, s, "cameras", "expected at least one camera")
    roles = ARM_CAMERA_ROLES[r.arms]
    seen: set[str] = set()
    for i, cam in enumerate(r.cameras):
        k = f"cameras.{i}"
        _check(
            cam.role in roles,
            s,
            f"{k}.role",
            f"expected a {r.arms}-arm role: " + ", ".join(sorted(roles)),
            cam.role,
        )
        _check(cam.name not in seen, s, f"{k}.name", "expected a unique camera name", cam.name)
        _check(cam.name.replace("_", "").isalnum(), s, f"{k}.name", "expected letters, digits and _", cam.name)
        seen.add(cam.name)
        for dim in ("height", "width"):
            v = getattr(cam, dim)
            _check(16 <= v <= 4096 and v % 2 == 0, s, f"{k}.{dim}", "expected an even pixel count in 16..4096", v)
    _check(len(r.stages) > 0, s, "stages", "expected at least one stage")
    names = [st.name for st in r.stages]
    _check(len(set(names)) == len(names), s, "stages", "expected unique stage names", names)
    _check(r.gate.window >= 0, s, "gate.window", "expected a window >= 0", r.gate.window)
    _check(
        0.0 < r.gate.threshold < 1.0,
        s,
        "gate.threshold",
        "expected a probability in (0, 1)",
        r.gate.threshold,
    )
    check_data(r.data, s, {cam.role for cam in r.cameras})
    bg = r.ood.background
    _check_range(bg.distractors, s, "ood.background.distractors", lo=1, strict=False)
    _check_range(bg.light_intensity, s, "ood.background.light_intensity", lo=0.0, strict=False)
    pos = r.ood.position
    for name in ("train_region", "test_region"):
        reg = getattr(pos, name)
        _check_range(reg.x, s, f"ood.position.{name}.x")
        _check_range(reg.y, s, f"ood.position.{name}.y")
    _check(
        not pos.train_region.overlaps(pos.test_region),
        s,
        "ood.position.test_region",
        "expected a region disjoint from ood.position.train_region",
        _plain(pos.test_region),
    )
    _check(len(r.ood.objects.substitutes) > 0, s, "ood.objects.substitutes", "expected at least one substitute")
    wm = r.model_config.world_model
    key = "model.overrides.world_model.context_frames"
    _check(wm.context_frames in (1, 2), s, key, "expected 1 or 2 context frames", wm.context_frames)
    _check(wm.context_frames == 1 or wm.condition == "concat", s, key, "expected 1 unless condition is concat")
    for spec_name in ("train_wm", "train_experts"):
        spec = getattr(r, spec_name)
        for attr in ("steps", "batch_size", "grad_accum_steps", "checkpoint_every"):
            _check(
                getattr(spec, attr) > 0,
                s,
                f"{spec_name}.{attr}",
                "expected a positive integer",
                getattr(spec, attr),
            )
        _check(spec.learning_rate > 0, s, f"{spec_name}.learning_rate", "expected a positive number")
        minutes = spec.max_minutes
        expected = "expected null (no cap) or a positive number of minutes"
        _check(minutes is None or minutes > 0, s, f"{spec_name}.max_minutes", expected, minutes)
        _check(0.0 <= spec.ema_decay < 1.0, s, f"{spec_name}.ema_decay", "expected 0 (off) or a decay in (0, 1)")
    chunk = r.model_config.action_chunk
    stride = r.train_experts.window_stride
    expected = f"expected 1 to the action chunk ({chunk}): past it some actions start no window"
    _check(1 <= stride <= chunk, s, "train_experts.window_stride", expected, stride)
    every = r.train_experts.snapshot_every
    _check(every >= 0, s, "train_experts.snapshot_every", "expected 0 (off) or a number of steps", every)
    experts = r.model_config
    for section, backbone in (("predictive_expert", "image_backbone"), ("reactive_expert", "frame_backbone")):
        part = getattr(experts, section)
        if getattr(part, backbone) == "conv":
            size = part.image_size
            expected = "expected a multiple of 8 for the convolutional encoder"
            _check(size > 0 and size % 8 == 0, s, f"model.overrides.{section}.image_size", expected, size)
        _check(part.augment_shift >= 0, s, f"model.overrides.{section}.augment_shift", "expected pixels >= 0")
    kept = experts.reactive_expert.train_frames
    expected = "expected null (every frame) or at least 1 frame"
    _check(kept is None or kept >= 1, s, "model.overrides.reactive_expert.train_frames", expected, kept)


def check_data(data: DataSpec, source: str, roles: set[str] | None = None) -> None:
    """The `data:` section's semantics: known camera roles (`roles`, when a recipe gives them), feature keys
    that are not empty, channel indices >= 0."""
    for role, key in data.cameras.items():
        if roles is not None:
            expected = "expected a camera role of this recipe: " + ", ".join(sorted(roles))
            _check(role in roles, source, f"data.cameras.{role}", expected, role)
        _check(bool(key.strip()), source, f"data.cameras.{role}", "expected a feature key such as observation.images.x")
    for name in ("action", "state"):
        _check(bool(getattr(data, name).strip()), source, f"data.{name}", "expected a feature key")
    for name in ("gripper", "height"):
        channels = getattr(data, name)
        if channels is not None:
            _check(all(c >= 0 for c in channels), source, f"data.{name}", "expected channel indices >= 0", channels)


def _deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_model(spec: ModelSpec, source: str) -> ModelConfig:
    """The preset named by `spec.preset` with `spec.overrides` applied, type-checked like the recipe."""
    if spec.preset not in PRESETS:
        raise RecipeError(source, "model.preset", "unknown preset; expected one of " + ", ".join(PRESETS), spec.preset)
    try:
        merged = _deep_merge(PRESETS[spec.preset], spec.overrides)
        return convert(ModelConfig, merged, "", source)
    except RecipeError as err:
        # Keys inside overrides are reported where the user wrote them.
        raise RecipeError(source, f"model.overrides.{err.key}", err.expected, show_got=False) from None


# --------------------------------------------------------------------------------------------- overrides
def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value), value parsed as a YAML scalar or flow collection."""
    if "=" not in text:
        raise RecipeError("--set", text, "expected dotted.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise RecipeError("--set", key, "expected a dotted key such as train_wm.steps")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError("--set", where, f"expected a list index below {len(node)}")
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise RecipeError("--set", where, "cannot set a key inside a plain value")
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise RecipeError("--set", text.split("=")[0], f"expected a list index below {len(node)}")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise RecipeError("--set", text.split("=")[0], "cannot set a key inside a plain value")
    return data


# --------------------------------------------------------------------------------------------- loading
def builtin_recipe_dir() -> Path:
    """The recipes shipped with the package (the repository's `recipes/` folder)."""
    return Path(str(resources.files("harmowam_recipes")))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in builtin_recipe_dir().glob("*.yaml"))


def find_recipe(ref: str | Path) -> Path:
    """A recipe path, or a task name looked up in ./recipes and then in the shipped recipes."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise RecipeError(str(path), None, "recipe file not found")
        return path
    for folder in (Path("recipes"), builtin_recipe_dir()):
        candidate = folder / f"{ref}.yaml"
        if candidate.is_file():
            return candidate
    raise RecipeError(str(ref), None, "no such recipe file or task; known tasks: " + ", ".join(recipe_names()))


def sections_from_overrides(overrides: list[str]) -> tuple[GateSpec, DataSpec]:
    """The gate and data sections from `--set gate.KEY=...` / `--set data.KEY=...` alone, over their defaults:
    for a dataset that records no recipe (one LeRobot wrote). Raises RecipeError for any other key."""
    data = apply_overrides({}, overrides)
    for key in data:
        if key not in ("gate", "data"):
            raise RecipeError("--set", key, "without a recipe only gate.* and data.* can be set; pass --recipe")
    gate = convert(GateSpec, data.get("gate", {}), "gate", "--set")
    spec = convert(DataSpec, data.get("data", {}), "data", "--set")
    check_data(spec, "--set")
    return gate, spec


def recipe_from_data(data: Any, source: str = "<memory>", overrides: list[str] | None = None) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(source, None, "expected a mapping of recipe keys at the top level", type(data).__name__)
    if overrides:
        data = apply_overrides(data, overrides)
    recipe = convert(Recipe, data, "", source)
    recipe.source = source
    recipe.model_config = resolve_model(recipe.model, source)
    _validate(recipe)
    return recipe


def recipe_from_text(text: str, source: str = "<memory>", overrides: list[str] | None = None) -> Recipe:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise RecipeError(source, None, f"YAML syntax error{where}: {problem}") from None
    return recipe_from_data(data, source, overrides)


def load_recipe(ref: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = find_recipe(ref)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(str(path), None, f"cannot read the file ({err.__class__.__name__})") from None
    return recipe_from_text(text, str(path), overrides)


def dump_recipe(recipe: Recipe, resolved: bool = True) -> str:
    return yaml.safe_dump(recipe.to_dict(resolved=resolved), sort_keys=False, allow_unicode=True)
