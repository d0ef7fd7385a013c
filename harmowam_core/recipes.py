"""Task recipes: one YAML file per task describes the station, the stages, gate labelling, OOD protocols,
the model preset and the training settings of both stages.

    recipe = load_recipe("stack_cans", overrides=["train_wm.steps=200"])
    recipe.model_config.world_model.num_frames  # 13

A recipe is validated strictly by pydantic: the schema below is pydantic dataclasses (`extra="forbid"`, scalars
strict: `3` is not a string, `true` not an integer), with validators for ranges and cross-field rules. An unknown
key, a wrong type, a missing field, overlapping position regions or an unknown preset raise `RecipeError`, whose
one-line message names the file, the dotted key and what was expected.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import types
import typing
from collections.abc import Callable
from dataclasses import field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Strict, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from harmowam_core.errors import RecipeError
from harmowam_core.presets import PRESETS, ModelConfig

ARM_CAMERA_ROLES = {
    "single": {"front", "top", "wrist"},
    "dual": {"global", "wrist_left", "wrist_right"},
}

# Containers are validated in pydantic's lax mode (a section is a YAML mapping, not an instance), every scalar
# strictly through these types; unknown keys are errors.
SCHEMA = ConfigDict(extra="forbid")
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _exponent(value: Any) -> Any:
    """PyYAML reads 1e-3 (no dot) as a string; everyone writes it."""
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


Int = Annotated[int, Strict()]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]
Number = Annotated[float, BeforeValidator(_exponent), Strict()]  # an integer is a number too


class Invalid(ValueError):
    """Raised by a validator: `expected` for the value `got` at `key` (dotted, relative to the validated object;
    None: the object itself). Pydantic wraps it in its ValidationError; `located` unwraps it."""

    def __init__(self, expected: str, got: Any = None, key: str | None = None, *, show_got: bool = True):
        super().__init__(expected)
        self.expected, self.got, self.key, self.show_got = expected, got, key, show_got


def rule(ok: Callable[[Any], bool], expected: str) -> AfterValidator:
    """A field validator: the value passes when `ok(value)`, else `expected` is the error."""

    def check(value: Any) -> Any:
        if not ok(value):
            raise Invalid(expected, value)
        return value

    return AfterValidator(check)


def _pair(lo: float | None = None, strict: bool = True) -> AfterValidator:
    """A [low, high] range: two values, low < high (`strict`, else <=), low >= `lo`."""

    def check(pair: list) -> list:
        if len(pair) != 2:
            raise Invalid("expected a [low, high] pair", pair)
        if not (pair[0] < pair[1] if strict else pair[0] <= pair[1]):
            raise Invalid("expected low < high" if strict else "expected low <= high", pair)
        if lo is not None and not pair[0] >= lo:
            raise Invalid(f"expected values >= {lo}", pair)
        return pair

    return AfterValidator(check)


def _identifier(expected: str) -> AfterValidator:
    return rule(lambda v: v.replace("_", "").isalnum(), expected)


PositiveInt = Annotated[Int, rule(lambda v: v > 0, "expected a positive integer")]
Pixels = Annotated[Int, rule(lambda v: 16 <= v <= 4096 and v % 2 == 0, "expected an even pixel count in 16..4096")]
Probability = Annotated[Number, rule(lambda v: 0.0 < v < 1.0, "expected a probability in (0, 1)")]
Decay = Annotated[Number, rule(lambda v: 0.0 <= v < 1.0, "expected 0 (off) or a decay in (0, 1)")]
FeatureKey = Annotated[Str, rule(lambda v: bool(v.strip()), "expected a feature key such as observation.images.x")]
Channels = Annotated[list[Int], rule(lambda v: all(c >= 0 for c in v), "expected channel indices >= 0")]
Minutes = Annotated[Number, rule(lambda v: v > 0, "expected null (no cap) or a positive number of minutes")]


# --------------------------------------------------------------------------------------------- schema
@dataclass(config=SCHEMA)
class CameraSpec:
    name: Annotated[Str, _identifier("expected letters, digits and _")]
    role: Literal["front", "top", "wrist", "global", "wrist_left", "wrist_right"]
    height: Pixels
    width: Pixels


@dataclass(config=SCHEMA)
class StageSpec:
    name: Str
    success: Str  # what success means (paper appendix B); the simulator implements it as a predicate


@dataclass(config=SCHEMA)
class GateSpec:
    """Gate labelling (paper D.3) and routing."""

    window: Annotated[Int, rule(lambda v: v >= 0, "expected a window >= 0")] = 20  # frames either side of a
    # keyframe labelled interaction
    height_thresholds: list[Number] = field(default_factory=list)  # end-effector z (m); a crossing is a key event
    gripper_closed_above: Number = 0.5  # gripper action channel: 0 open, 1 closed
    threshold: Probability = 0.5  # routing: p(interaction) >= threshold -> predictive expert


@dataclass(config=SCHEMA)
class DataSpec:
    """Which features of the dataset this recipe trains on (`data:`; `--set data.cameras.front=KEY`): needed
    only for datasets recorded elsewhere, e.g. by LeRobot, whose keys are not HarmoWAM's.

    cameras: camera role -> the dataset's image or video feature key (`observation.images.laptop`); the camera
    of that role is read from it, and only mapped cameras are read. Empty: the dataset's cameras by name.
    action / state: the feature keys the experts learn and read (at the dataset's own dimensions).
    gripper: channels of the action that command a gripper; height: channels of the state that are an
    end-effector height (both for `harmowam label`; null: HarmoWAM's 7-per-arm layout)."""

    cameras: dict[Str, FeatureKey] = field(default_factory=dict)
    action: Annotated[Str, rule(lambda v: bool(v.strip()), "expected a feature key")] = "action"
    state: Annotated[Str, rule(lambda v: bool(v.strip()), "expected a feature key")] = "observation.state"
    gripper: Channels | None = None
    height: Channels | None = None

    def to_mapping(self, names: dict[str, str] | None = None):
        """The reader's `DataMapping`; `names`: camera role -> the recipe's camera name (default the role)."""
        from harmowam_core.data.format import DataMapping  # not at the top: recipes load before pyarrow

        names = names or {}
        cameras = {names.get(role, role): key for role, key in self.cameras.items()}
        return DataMapping(
            cameras=cameras, action=self.action, state=self.state, gripper=self.gripper, height=self.height
        )


@dataclass(config=SCHEMA)
class Region:
    """An axis-aligned rectangle on the table plane, metres in the table frame."""

    x: Annotated[list[Number], _pair()]
    y: Annotated[list[Number], _pair()]

    def overlaps(self, other: Region) -> bool:
        return self.x[0] < other.x[1] and other.x[0] < self.x[1] and self.y[0] < other.y[1] and other.y[0] < self.y[1]

    def contains(self, x: float, y: float) -> bool:
        return self.x[0] <= x <= self.x[1] and self.y[0] <= y <= self.y[1]


@dataclass(config=SCHEMA)
class BackgroundOOD:
    distractors: Annotated[list[Int], _pair(lo=1, strict=False)] = field(default_factory=lambda: [5, 8])  # count
    # range, inclusive
    light_intensity: Annotated[list[Number], _pair(lo=0.0, strict=False)] = field(
        default_factory=lambda: [0.4, 1.6]
    )  # scale range, never 1 +- 0.2
    light_direction_deg: Number = 35.0  # how far the key light's direction turns


@dataclass(config=SCHEMA)
class PositionOOD:
    train_region: Region
    test_region: Region

    @model_validator(mode="after")
    def _disjoint(self) -> PositionOOD:
        if self.train_region.overlaps(self.test_region):
            expected = "expected a region disjoint from ood.position.train_region"
            raise Invalid(expected, dataclasses.asdict(self.test_region), key="test_region")
        return self


@dataclass(config=SCHEMA)
class ObjectsOOD:
    substitutes: Annotated[dict[Str, Str], rule(bool, "expected at least one substitute")]  # target object ->
    # substitute of different appearance and geometry


@dataclass(config=SCHEMA)
class OODSpec:
    background: BackgroundOOD
    position: PositionOOD
    objects: ObjectsOOD


@dataclass(config=SCHEMA)
class ModelSpec:
    preset: Annotated[Str, rule(lambda v: v in PRESETS, "unknown preset; expected one of " + ", ".join(PRESETS))] = (
        "tiny"
    )
    overrides: dict[Str, Any] = field(default_factory=dict)


@dataclass(config=SCHEMA)
class TrainSpec:
    """What both training stages share: one accelerate loop, its optimiser, precision, checkpoints, split."""

    steps: PositiveInt = 2000
    batch_size: PositiveInt = 8
    learning_rate: Annotated[Number, rule(lambda v: v > 0, "expected a positive number")] = 3e-4
    weight_decay: Number = 0.01
    warmup_steps: Int = 100
    lr_schedule: Literal["constant", "cosine"] = "constant"  # after the warmup; cosine decays to 0 at `steps`
    grad_accum_steps: PositiveInt = 1
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    ema_decay: Decay = 0.0  # 0 disables EMA
    checkpoint_every: PositiveInt = 500
    held_out_episodes: Int = 2
    num_workers: Int = 0
    seed: Int = 0
    max_minutes: Minutes | None = None  # wall-clock cap on the training loop (resumed runs count earlier time)


@dataclass(config=SCHEMA)
class TrainWMSpec(TrainSpec):
    """Stage 1: world-model fine-tuning with conditional flow matching."""

    lr_schedule: Literal["constant", "cosine"] = "cosine"  # the tiny model's samples settle as the rate decays
    preview_every: Int = 1000


@dataclass(config=SCHEMA)
class TrainExpertsSpec(TrainSpec):
    """Stage 2: predictive expert, reactive expert and gate, world model frozen (loss l1*pred + l2*react + gate)."""

    ema_decay: Decay = 0.995  # the evaluated weights are an exponential moving average of the trained ones
    window_stride: Int = 4  # a training window starts at every k-th frame: the world model imagines each once
    # (on 2 CPU cores about 0.07 s a window, the largest cost of stage 2); with a 12-action chunk every action
    # is still learned, in 12 / k windows. 1: every frame. At most the action chunk (checked by the recipe)
    lambda_pred: Number = 1.0
    lambda_react: Number = 1.0
    reactive_on_real_frames: Bool = False
    snapshot_every: Annotated[Int, rule(lambda v: v >= 0, "expected 0 (off) or a number of steps")] = 0  # also
    # keep the trained (EMA) weights every N steps in snapshots/step_N/, for choosing the evaluated model by
    # closed-loop success (`harmowam export --snapshot N`); 0: the final model only


def _unique_names(stages: list[StageSpec]) -> list[StageSpec]:
    names = [st.name for st in stages]
    if len(set(names)) != len(names):
        raise Invalid("expected unique stage names", names)
    return stages


@dataclass(config=SCHEMA)
class Recipe:
    name: Annotated[Str, _identifier("expected a task name of letters, digits and _")]
    arms: Literal["single", "dual"]
    instruction: Annotated[Str, rule(lambda v: bool(v.strip()), "expected a non-empty instruction")]
    fps: Annotated[Int, rule(lambda v: v > 0, "expected a positive control rate")]
    max_episode_steps: Annotated[Int, rule(lambda v: v > 0, "expected a positive step count")]
    cameras: Annotated[list[CameraSpec], rule(bool, "expected at least one camera")]
    stages: Annotated[list[StageSpec], rule(bool, "expected at least one stage"), AfterValidator(_unique_names)]
    ood: OODSpec
    gate: GateSpec = field(default_factory=GateSpec)
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train_wm: TrainWMSpec = field(default_factory=TrainWMSpec)
    train_experts: TrainExpertsSpec = field(default_factory=TrainExpertsSpec)
    # Filled in by validation, not read from the file: the preset with its overrides applied; where it came from.
    model_config: ModelConfig = field(default_factory=ModelConfig, init=False)
    source: str = field(default="<memory>", init=False)

    @model_validator(mode="after")
    def _cameras_fit_the_arms(self) -> Recipe:
        roles = ARM_CAMERA_ROLES[self.arms]
        seen: set[str] = set()
        for i, cam in enumerate(self.cameras):
            if cam.role not in roles:
                raise Invalid(
                    f"expected a {self.arms}-arm role: " + ", ".join(sorted(roles)), cam.role, f"cameras.{i}.role"
                )
            if cam.name in seen:
                raise Invalid("expected a unique camera name", cam.name, f"cameras.{i}.name")
            seen.add(cam.name)
        ours = {cam.role for cam in self.cameras}
        for role in self.data.cameras:
            if role not in ours:
                expected = "expected a camera role of this recipe: " + ", ".join(sorted(ours))
                raise Invalid(expected, role, f"data.cameras.{role}")
        return self

    @model_validator(mode="after")
    def _resolve_model(self) -> Recipe:
        self.model_config = _resolve(self.model)
        wm = self.model_config.world_model
        key = "model.overrides.world_model.context_frames"
        if wm.context_frames not in (1, 2):
            raise Invalid("expected 1 or 2 context frames", wm.context_frames, key)
        if wm.context_frames != 1 and wm.condition != "concat":
            raise Invalid("expected 1 unless condition is concat", key=key)
        chunk = self.model_config.action_chunk
        stride = self.train_experts.window_stride
        if not 1 <= stride <= chunk:
            expected = f"expected 1 to the action chunk ({chunk}): past it some actions start no window"
            raise Invalid(expected, stride, "train_experts.window_stride")
        for section, backbone in (("predictive_expert", "image_backbone"), ("reactive_expert", "frame_backbone")):
            part = getattr(self.model_config, section)
            where = f"model.overrides.{section}"
            if getattr(part, backbone) == "conv" and not (part.image_size > 0 and part.image_size % 8 == 0):
                expected = "expected a multiple of 8 for the convolutional encoder"
                raise Invalid(expected, part.image_size, f"{where}.image_size")
            if part.augment_shift < 0:
                raise Invalid("expected pixels >= 0", part.augment_shift, f"{where}.augment_shift")
        kept = self.model_config.reactive_expert.train_frames
        if kept is not None and kept < 1:
            expected = "expected null (every frame) or at least 1 frame"
            raise Invalid(expected, kept, "model.overrides.reactive_expert.train_frames")
        return self

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
        plain = dataclasses.asdict(self)
        out = {f.name: plain[f.name] for f in dataclasses.fields(self) if f.init}  # not the derived fields
        if resolved:
            out["model"] = {"preset": self.model.preset, **plain["model_config"]}
        return out


# --------------------------------------------------------------------------------------------- errors
def located(err: ValidationError, schema: Any) -> tuple[str, str, Any, bool]:
    """Pydantic's first error as (dotted key, what was expected, the value given, whether to show it), worded
    from `schema`, the type that was validated."""
    first = err.errors(include_url=False)[0]
    loc = [p for p in first["loc"] if p != "[key]"]
    invalid = (first.get("ctx") or {}).get("error")
    if isinstance(invalid, Invalid):
        key = ".".join(str(p) for p in [*loc, *([invalid.key] if invalid.key else [])])
        return key, invalid.expected, invalid.got, invalid.show_got
    key = ".".join(str(p) for p in loc)
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument", "invalid_key"):
        parent = _strip(_annotation_at(schema, first["loc"][:-1]))
        names = [f.name for f in dataclasses.fields(parent) if f.init] if dataclasses.is_dataclass(parent) else []
        return key, "unknown key" + ("; expected one of " + ", ".join(names) if names else ""), None, False
    tp = _annotation_at(schema, first["loc"])
    described = _describe(tp) if tp is not None else first["msg"].lower()
    if first["type"] in ("missing", "missing_argument"):
        return key, "missing; expected " + described, None, False
    if first["type"] == "finite_number":
        described = "a finite number"
    return key, "expected " + described, first.get("input"), True


def _strip(tp: Any) -> Any:
    """`tp` without its `Annotated` metadata."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _annotation_at(tp: Any, loc: tuple) -> Any:
    """The schema type at pydantic's error location `loc` inside `tp` (None where it cannot tell)."""
    loc = tuple(loc)
    i = 0
    while i < len(loc):
        tp = _strip(tp)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):  # X | None: descend into X
            tp = next(a for a in args if a is not type(None))
            continue
        part = loc[i]
        if dataclasses.is_dataclass(tp):
            tp = typing.get_type_hints(tp, include_extras=True).get(str(part))
        elif origin is list:
            tp = args[0]
        elif origin is dict:
            key_error = i + 1 < len(loc) and loc[i + 1] == "[key]"
            tp = args[0] if key_error else args[1]
            i += key_error
        else:
            return None
        if tp is None:
            return None
        i += 1
    return tp


def _describe(tp: Any) -> str:
    tp = _strip(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
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
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp) if f.init)
    if tp is Any:
        return "any value"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


@functools.cache
def _adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp)


def validate(tp: Any, data: Any, source: str, key: str = "") -> Any:
    """`data` (plain YAML data) as a `tp`, or RecipeError naming `source` and the dotted key under `key`."""
    try:
        return _adapter(tp).validate_python(data)
    except ValidationError as err:
        sub, expected, got, show = located(err, tp)
        where = ".".join(p for p in (key, sub) if p) or None
        raise RecipeError(source, where, expected, got, show_got=show) from None


# --------------------------------------------------------------------------------------------- model presets
_STRICT = {int: Int, float: Number, str: Str, bool: Bool}


def _strict_type(tp: Any) -> Any:
    """`tp` (a preset's annotation) with strict scalars and dataclasses as pydantic dataclasses."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _strict_twin(tp)
    if origin in (list, dict):
        return origin[tuple(_strict_type(a) for a in args)]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_strict_type(a) for a in args)]  # noqa: UP007 (built from a tuple)
    return _STRICT.get(tp, tp)


@functools.cache
def _strict_twin(cls: type) -> type:
    """A pydantic dataclass with the fields of the (plain) preset dataclass `cls`, validated like the recipe: the
    presets stay plain dataclasses, this checks their overrides."""
    hints = typing.get_type_hints(cls)
    namespace: dict[str, Any] = {"__annotations__": {}, "__module__": __name__}
    for f in dataclasses.fields(cls):
        namespace["__annotations__"][f.name] = _strict_type(hints[f.name])
        namespace[f.name] = field(default=f.default, default_factory=f.default_factory)
    return dataclass(type(cls.__name__, (), namespace), config=SCHEMA)


def _resolve(spec: ModelSpec) -> ModelConfig:
    """The preset with the overrides applied, or Invalid at `model.preset` / `model.overrides.<key>`."""
    if spec.preset not in PRESETS:
        raise Invalid("unknown preset; expected one of " + ", ".join(PRESETS), spec.preset, "model.preset")
    merged = _deep_merge(PRESETS[spec.preset], spec.overrides)
    twin = _strict_twin(ModelConfig)
    try:
        _adapter(twin).validate_python(merged)
    except ValidationError as err:
        key, expected, _, _ = located(err, twin)  # keys inside overrides are reported where the user wrote them
        raise Invalid(expected, key=f"model.overrides.{key}", show_got=False) from None
    return _adapter(ModelConfig).validate_python(merged)  # checked strictly above


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
    try:
        return _resolve(spec)
    except Invalid as err:
        raise RecipeError(source, err.key, err.expected, err.got, show_got=err.show_got) from None


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
    return validate(GateSpec, data.get("gate", {}), "--set", "gate"), validate(
        DataSpec, data.get("data", {}), "--set", "data"
    )


def recipe_from_data(data: Any, source: str = "<memory>", overrides: list[str] | None = None) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(source, None, "expected a mapping of recipe keys at the top level", type(data).__name__)
    if overrides:
        data = apply_overrides(data, overrides)
    recipe = validate(Recipe, data, source)
    recipe.source = source
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
