"""The recipe schema: a task (`Recipe`: station, cameras, stages, gate labelling, OOD protocols, data mapping)
with its model preset (`ModelSpec`, resolved against `models.presets`) and the training settings of both stages
(`TrainWMSpec`, `TrainExpertsSpec`). Pydantic dataclasses (`extra="forbid"`, strict scalars) with validators
for ranges and cross-field rules, and the resolved model checked against what its architecture needs of its
settings (`_check_world_model`, `_check_experts`): a recipe that validates builds, trains and plans."""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from dataclasses import field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from harmowam_core.config.validation import (
    SCHEMA,
    Bool,
    Channels,
    Decay,
    Every,
    FeatureKey,
    Int,
    Invalid,
    Minutes,
    NonNegativeInt,
    NonNegativeNumber,
    Number,
    Pixels,
    PositiveInt,
    PositiveNumber,
    Probability,
    Seed,
    Str,
    adapter,
    identifier,
    located,
    pair,
    rule,
)
from harmowam_core.errors import RecipeError
from harmowam_core.models.presets import (
    CONV_ENCODER_STRIDE,
    PRESETS,
    ROPE_MAX_SEQ_LEN,
    TINY_DINOV2_PATCH,
    TINY_ENCODER_WIDTH,
    TINY_SIGLIP_PATCH,
    WAN_VAE_FRAME_GROUP,
    ModelConfig,
    codec_factors,
)

ARM_CAMERA_ROLES = {
    "single": {"front", "top", "wrist"},
    "dual": {"global", "wrist_left", "wrist_right"},
}


# --------------------------------------------------------------------------------------------- schema
@dataclass(config=SCHEMA)
class CameraSpec:
    name: Annotated[Str, identifier("expected letters, digits and _")]
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

    x: Annotated[list[Number], pair()]
    y: Annotated[list[Number], pair()]

    def overlaps(self, other: Region) -> bool:
        return self.x[0] < other.x[1] and other.x[0] < self.x[1] and self.y[0] < other.y[1] and other.y[0] < self.y[1]

    def contains(self, x: float, y: float) -> bool:
        return self.x[0] <= x <= self.x[1] and self.y[0] <= y <= self.y[1]


@dataclass(config=SCHEMA)
class BackgroundOOD:
    distractors: Annotated[list[Int], pair(lo=1, strict=False)] = field(default_factory=lambda: [5, 8])  # count
    # range, inclusive
    light_intensity: Annotated[list[Number], pair(lo=0.0, strict=False)] = field(
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
    learning_rate: PositiveNumber = 3e-4
    weight_decay: NonNegativeNumber = 0.01
    warmup_steps: NonNegativeInt = 100
    lr_schedule: Literal["constant", "cosine"] = "constant"  # after the warmup; cosine decays to 0 at `steps`
    grad_accum_steps: PositiveInt = 1
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    ema_decay: Decay = 0.0  # 0 disables EMA
    checkpoint_every: PositiveInt = 500
    held_out_episodes: Annotated[Int, rule(lambda v: v >= 1, "expected at least 1 (the evaluation reads them)")] = 2
    num_workers: NonNegativeInt = 0  # data-loader processes (0: in the training process)
    seed: Seed = 0  # 0..2**32-1 (numpy's legacy seeding takes no more)
    max_minutes: Minutes | None = None  # wall-clock cap on the training loop (resumed runs count earlier time)


@dataclass(config=SCHEMA)
class TrainWMSpec(TrainSpec):
    """Stage 1: world-model fine-tuning with conditional flow matching."""

    lr_schedule: Literal["constant", "cosine"] = "cosine"  # the tiny model's samples settle as the rate decays
    preview_every: Every = 1000  # 0: no previews during training


@dataclass(config=SCHEMA)
class TrainExpertsSpec(TrainSpec):
    """Stage 2: predictive expert, reactive expert and gate, world model frozen (loss l1*pred + l2*react + gate)."""

    lr_schedule: Literal["constant", "cosine"] = "cosine"  # as the tiny runs in docs/learning.md were trained
    ema_decay: Decay = 0.995  # the evaluated weights are an exponential moving average of the trained ones
    window_stride: Int = 4  # a training window starts at every k-th frame: the world model imagines each once
    # (on 2 CPU cores about 0.07 s a window, the largest cost of stage 2); with a 12-action chunk every action
    # is still learned, in 12 / k windows. 1: every frame. At most the action chunk (checked by the recipe)
    lambda_pred: NonNegativeNumber = 1.0  # loss weights: 0 leaves that expert untrained, a negative one would
    lambda_react: NonNegativeNumber = 1.0  # push its error up
    reactive_on_real_frames: Bool = False
    snapshot_every: Every = 0  # also
    # keep the trained (EMA) weights every N steps in snapshots/step_N/, for choosing the evaluated model by
    # closed-loop success (`harmowam export --snapshot N`); 0: the final model only


def _unique_names(stages: list[StageSpec]) -> list[StageSpec]:
    names = [st.name for st in stages]
    if len(set(names)) != len(names):
        raise Invalid("expected unique stage names", names)
    return stages


@dataclass(config=SCHEMA)
class Recipe:
    name: Annotated[Str, identifier("expected a task name of letters, digits and _")]
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
        names = [cam.name for cam in self.cameras]
        for name in self.model_config.predictive_expert.crops or {}:
            if name not in names:
                expected = "expected a camera name of this recipe: " + ", ".join(names)
                raise Invalid(expected, name, "model.overrides.predictive_expert.crops")
        chunk = self.model_config.action_chunk
        stride = self.train_experts.window_stride
        if not 1 <= stride <= chunk:
            expected = f"expected 1 to the action chunk ({chunk}): past it some actions start no window"
            raise Invalid(expected, stride, "train_experts.window_stride")
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

    def step_limit(self, max_steps: int | None = None) -> int:
        """An episode's step limit: `max_steps` where given (a caller's cap, 0 included), else the recipe's
        `max_episode_steps`."""
        return self.max_episode_steps if max_steps is None else max_steps

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


# --------------------------------------------------------------------------------------------- model presets
CROP_BOX = "expected [top, left, height, width], fractions of the frame: a box of positive size inside it"


def _crop_box(box: list[float]) -> bool:
    """A camera's crop (`predictive_expert.crops`): four fractions, the box inside the frame."""
    if len(box) != 4:
        return False
    top, left, height, width = box
    inside = 1 + 1e-9  # [0.9, 0, 0.1, 1] reaches the edge: 0.9 + 0.1 may round past 1
    fits = top + height <= inside and left + width <= inside
    return 0 <= top < 1 and 0 <= left < 1 and height > 0 and width > 0 and fits


# The presets' settings as their overrides are checked: every integer of a preset (also inside a list: resolution,
# patch_size, kernel and hidden sizes) is a positive count or size, and a number any finite one, except these.
_STRICT = {int: PositiveInt, float: Number, str: Str, bool: Bool}
_MODEL_FIELDS: dict[tuple[str, str], Any] = {
    ("WorldModelConfig", "feature_block"): Int,  # a block index, -1 the last (checked against num_layers)
    ("WorldModelConfig", "shift"): PositiveNumber,
    ("WorldModelConfig", "sample_shift"): PositiveNumber | None,
    ("WorldModelConfig", "sigma_data"): NonNegativeNumber,  # 0: no skip preconditioning
    ("WorldModelConfig", "pixel_residual_scale"): PositiveNumber,
    ("PredictiveExpertConfig", "augment_shift"): Annotated[Int, rule(lambda v: v >= 0, "expected pixels >= 0")],
    ("ReactiveExpertConfig", "augment_shift"): Annotated[Int, rule(lambda v: v >= 0, "expected pixels >= 0")],
    ("PredictiveExpertConfig", "crops"): dict[Str, Annotated[list[Number], rule(_crop_box, CROP_BOX)]] | None,
    ("ReactiveExpertConfig", "smooth_l1_beta"): PositiveNumber,
    ("ReactiveExpertConfig", "train_frames"): Annotated[
        Int, rule(lambda v: v >= 1, "expected null (every frame) or at least 1 frame")
    ]
    | None,
    ("GateModelConfig", "dropout"): Annotated[Number, rule(lambda v: 0 <= v < 1, "expected a dropout in [0, 1)")],
}


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
        namespace["__annotations__"][f.name] = _MODEL_FIELDS.get((cls.__name__, f.name)) or _strict_type(hints[f.name])
        namespace[f.name] = field(default=f.default, default_factory=f.default_factory)
    return dataclass(type(cls.__name__, (), namespace), config=SCHEMA)


def _resolve(spec: ModelSpec) -> ModelConfig:
    """The preset with the overrides applied, or Invalid at `model.preset` / `model.overrides.<key>`."""
    if spec.preset not in PRESETS:
        raise Invalid("unknown preset; expected one of " + ", ".join(PRESETS), spec.preset, "model.preset")
    merged = _deep_merge(PRESETS[spec.preset], spec.overrides)
    twin = _strict_twin(ModelConfig)
    try:
        adapter(twin).validate_python(merged)
    except ValidationError as err:
        key, expected, _, _ = located(err, twin)  # keys inside overrides are reported where the user wrote them
        raise Invalid(expected, key=f"model.overrides.{key}", show_got=False) from None
    config = adapter(ModelConfig).validate_python(merged)  # checked strictly above
    _check_world_model(config)
    _check_experts(config)
    return config


def _check_world_model(config: ModelConfig) -> None:
    """What the world model's architecture needs of its settings (diffusers' `WanTransformer3DModel` and
    `AutoencoderKLWan`, `models.world_model`), so that a model that validates also builds, trains and predicts:
    Invalid at the key to change."""
    wm, where = config.world_model, "model.overrides.world_model"
    if wm.context_frames not in (1, 2):
        raise Invalid("expected 1 or 2 context frames", wm.context_frames, f"{where}.context_frames")
    if wm.context_frames != 1 and wm.condition != "concat":
        raise Invalid("expected 1 unless condition is concat", key=f"{where}.context_frames")
    layers, block = wm.num_layers, wm.feature_block
    if not -layers <= block < layers:
        raise Invalid(f"expected a block index of the {layers} layers (-1: the last)", block, f"{where}.feature_block")
    if wm.text_encoder == "umt5" and not wm.pretrained:
        expected = "expected byte-t5 without a checkpoint: umt5 loads from world_model.pretrained"
        raise Invalid(expected, wm.text_encoder, f"{where}.text_encoder")
    if len(wm.resolution) != 2:
        raise Invalid("expected [height, width]", wm.resolution, f"{where}.resolution")
    if len(wm.patch_size) != 3 or wm.patch_size[0] != 1:
        expected = "expected [1, height, width]: the clean current frame's tokens are a latent frame's alone"
        raise Invalid(expected, wm.patch_size, f"{where}.patch_size")
    spatial, temporal = codec_factors(wm)
    for side, size, patch in zip(("height", "width"), wm.resolution, wm.patch_size[1:], strict=True):
        step = spatial * patch
        if size % step:
            expected = (
                f"expected a {side} that is a multiple of {step}: the {wm.codec} codec's {spatial} x patch {patch}"
            )
            raise Invalid(expected, wm.resolution, f"{where}.resolution")
        if size // step > ROPE_MAX_SEQ_LEN:
            expected = (
                f"expected a {side} of at most {ROPE_MAX_SEQ_LEN} patches of {step} pixels (the rotary embedding's)"
            )
            raise Invalid(expected, wm.resolution, f"{where}.resolution")
    frames, chunk = wm.num_frames, config.action_chunk
    if wm.codec == "wan" and (frames - 1) % WAN_VAE_FRAME_GROUP:
        expected = (
            f"expected {WAN_VAE_FRAME_GROUP}k + 1 frames: the wan codec encodes the first frame alone, then "
            f"{WAN_VAE_FRAME_GROUP} at a time"
        )
        raise Invalid(expected, frames, f"{where}.num_frames")
    if frames - 1 < chunk:
        expected = (
            f"expected at least {chunk + 1} frames, the current one and one per action of the {chunk}-action chunk "
            "(model.overrides.action_chunk): the reactive expert reads action k from frame k"
        )
        raise Invalid(expected, frames, f"{where}.num_frames")
    if 1 + (frames - 1) // temporal > ROPE_MAX_SEQ_LEN:
        expected = f"expected at most {ROPE_MAX_SEQ_LEN} latent frames (the rotary embedding's positions)"
        raise Invalid(expected, frames, f"{where}.num_frames")
    if wm.attention_head_dim % 2 or wm.attention_head_dim < 6:
        expected = (
            "expected an even head dim of at least 6: Wan's rotary embedding turns channel pairs, 2 x (dim // 6) "
            "for the height, as many for the width, the rest for time"
        )
        raise Invalid(expected, wm.attention_head_dim, f"{where}.attention_head_dim")


def _check_experts(config: ModelConfig) -> None:
    """What the experts' architectures need of their settings (`models.predictive_expert`, `reactive_expert`,
    `encoders`), with the world model's width they read: Invalid at the key to change."""
    pe, react = config.predictive_expert, config.reactive_expert
    where = "model.overrides.predictive_expert"
    if pe.hidden_size % pe.num_attention_heads:
        expected = f"expected a divisor of hidden_size ({pe.hidden_size}): each head is hidden_size / heads wide"
        raise Invalid(expected, pe.num_attention_heads, f"{where}.num_attention_heads")
    if pe.obs_steps not in (1, 2):
        raise Invalid("expected 1 or 2 observation steps", pe.obs_steps, f"{where}.obs_steps")
    speed = pe.speed_augment
    if speed is not None and (len(speed) != 2 or not 0 <= speed[0] <= speed[1]):
        expected = "expected null or [low, high] with 0 <= low <= high: the factors the state's change is scaled by"
        raise Invalid(expected, speed, f"{where}.speed_augment")
    if speed is not None and pe.obs_steps != 2:
        raise Invalid("expected null with obs_steps 1: it scales the state's change, which only obs_steps 2 reads",
                      speed, f"{where}.speed_augment")  # fmt: skip
    if pe.inference_steps > pe.train_timesteps:
        expected = f"expected at most train_timesteps ({pe.train_timesteps}): DDIM samples among the trained steps"
        raise Invalid(expected, pe.inference_steps, f"{where}.inference_steps")
    for section, part, encoder, checkpoint, patch in (
        ("predictive_expert", pe, pe.image_backbone, pe.image_encoder, TINY_SIGLIP_PATCH),
        ("reactive_expert", react, react.frame_backbone, react.dino, TINY_DINOV2_PATCH),
    ):
        if encoder == "conv" and part.image_size % CONV_ENCODER_STRIDE:
            expected = f"expected a multiple of {CONV_ENCODER_STRIDE} for the convolutional encoder"
            raise Invalid(expected, part.image_size, f"model.overrides.{section}.image_size")
        if encoder != "conv" and not checkpoint and part.image_size % patch:
            expected = f"expected a multiple of {patch}, the patch of the tiny {encoder} (no checkpoint named)"
            raise Invalid(expected, part.image_size, f"model.overrides.{section}.image_size")
    where = "model.overrides.reactive_expert"
    if react.frame_backbone == "dinov2" and not react.dino and react.dino_width != TINY_ENCODER_WIDTH:
        expected = f"expected {TINY_ENCODER_WIDTH}, the tiny dinov2's width (no checkpoint named)"
        raise Invalid(expected, react.dino_width, f"{where}.dino_width")
    wm = config.world_model
    width = wm.num_attention_heads * wm.attention_head_dim
    if width % react.dino_width:
        expected = (
            f"expected a divisor of the world model's width {width} (num_attention_heads x attention_head_dim): "
            "its tokens are average-pooled to this width"
        )
        raise Invalid(expected, react.dino_width, f"{where}.dino_width")
    if not react.decoder_kernel_sizes:
        raise Invalid("expected at least one kernel size", react.decoder_kernel_sizes, f"{where}.decoder_kernel_sizes")


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
