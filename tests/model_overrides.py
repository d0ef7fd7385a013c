"""Generated model overrides (issue 22, item 1): what tests/test_recipes.py's property and
benchmarks/recipe_constraints.py share.

- `model_overrides()`: a hypothesis strategy of `--set` lists over the structural settings of the world model
  (resolution, patch size, frame count, codec, heads and head dim, conditioning), the experts (widths, heads,
  backbones, image sizes, sampling steps, decoder kernels), the gate and the action chunk: small sizes, valid and
  invalid combinations alike, on a single-arm or a dual-arm task.
- `try_overrides(task, sets)`: `harmowam recipe show TASK --set ...` in-process. Exit code 0 (accepted): the
  models the recipe resolves to are built and exercised (`exercise`: one training step of each stage and one
  plan, shapes checked). Exit code 2 (rejected): the output must be one `error:` line naming a model key.

The rule: a recipe that validates trains and plans; every other one is one line naming the key and the
constraint, before anything is built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st
from torch.utils.data import default_collate

from harmowam_core.config import Recipe, load_recipe
from harmowam_core.data.windows import expert_inputs, resize_frames
from harmowam_core.models.presets import codec_factors
from harmowam_core.models.world_model import frame_to_latent, latent_frames
from harmowam_core.policy.bundle import untrained_models
from harmowam_core.policy.policy import HarmoWAMPolicy

TASKS = ("stack_cans", "flowers")  # single-arm and dual-arm
# Fixed for speed (one layer, narrow, one denoising step); the window stride is left to the chunk.
SMALL = {
    "world_model": {"num_layers": 1, "ffn_dim": 32, "text_dim": 16, "denoising_steps": 1, "vae_base_dim": 8},
    "predictive_expert": {"num_layers": 1},
    "reactive_expert": {"decoder_channels": 8},
    "gate": {"hidden_sizes": [8]},
}
BASE = [f"model.overrides.{section}.{k}={json.dumps(v)}" for section, keys in SMALL.items() for k, v in keys.items()]
BASE.append("train_experts.window_stride=1")


def _optional(**values: st.SearchStrategy) -> st.SearchStrategy[dict]:
    """A mapping with any subset of these keys (a recipe overrides some settings and keeps the preset's rest)."""
    return st.fixed_dictionaries({}, optional=values)


def _one_of(*values) -> st.SearchStrategy:
    return st.sampled_from(values)


SIDES = _one_of(16, 24, 30, 32, 48, 60, 64)
WORLD_MODEL = _optional(
    codec=_one_of("pixel", "wan"),
    vae_arch=_one_of("small", "wan2.2"),
    pixel_patch=_one_of(2, 3, 4),
    latent_channels=_one_of(4, 8),
    resolution=st.one_of(st.lists(SIDES, min_size=2, max_size=2), st.lists(SIDES, min_size=1, max_size=3)),
    patch_size=st.one_of(
        st.tuples(st.just(1), _one_of(1, 2, 3), _one_of(1, 2, 3)).map(list), _one_of([2, 2, 2], [1, 2])
    ),
    num_frames=_one_of(1, 2, 4, 5, 6, 7, 8, 9, 12, 13),
    num_attention_heads=_one_of(1, 2, 3),
    attention_head_dim=_one_of(4, 6, 7, 8, 12, 16, 32),
    conditioning=_one_of(("concat", 2), ("concat", 1), ("first", 1), ("first", 2)),
    prediction=_one_of("velocity", "sample"),
    output_gate=st.booleans(),
    feature_block=_one_of(-1, 0, 1),
)
PREDICTIVE = _optional(
    hidden_size=_one_of(16, 24, 32),
    num_attention_heads=_one_of(1, 2, 3, 4),
    image_backbone=_one_of("conv", "siglip"),
    image_size=_one_of(16, 24, 32, 40),
    keypoints=st.booleans(),
    obs_steps=_one_of(1, 2, 3),
    train_timesteps=_one_of(10, 100),
    inference_steps=_one_of(1, 2, 50),
    prediction=_one_of("epsilon", "sample"),
    speed_augment=_one_of(None, [0.5, 1.0], [1.0, 0.5], [0.5], [-0.5, 1.0]),
    gripper_head=st.booleans(),
    gripper_layers=_one_of(1, 2),
)
REACTIVE = _optional(
    frame_backbone=_one_of("conv", "dinov2"),
    image_size=_one_of(16, 24, 32, 36),
    dino_width=_one_of(8, 16, 32, 64),
    decoder_kernel_sizes=_one_of([1, 3], [2], []),
    train_frames=_one_of(None, 1, 2),
)
GATE = _optional(pool_grid=_one_of(1, 2, 4), motion=st.booleans(), world_model=st.booleans())


@st.composite
def model_overrides(draw) -> tuple[str, list[str]]:
    """(task, `--set` lines): the fixed small sizes, then one line per drawn setting."""
    task = draw(st.sampled_from(TASKS))
    sets = list(BASE)
    chunk = draw(st.one_of(st.none(), st.integers(1, 6)))
    if chunk is not None:
        sets.append(f"model.overrides.action_chunk={chunk}")
    for section, strategy in (
        ("world_model", WORLD_MODEL),
        ("predictive_expert", PREDICTIVE),
        ("reactive_expert", REACTIVE),
        ("gate", GATE),
    ):
        values = draw(strategy)
        if "conditioning" in values:  # condition and context frames go together
            values["condition"], values["context_frames"] = values.pop("conditioning")
        sets += [f"model.overrides.{section}.{k}={json.dumps(v)}" for k, v in values.items()]
    return task, sets


# --------------------------------------------------------------------------------------------- outcomes
@dataclass
class Outcome:
    task: str
    sets: list[str]
    exit_code: int
    output: str
    error: str | None = None  # what went wrong: an accepted recipe that failed, or an unclean rejection

    @property
    def accepted(self) -> bool:
        return self.exit_code == 0

    @property
    def rejected_key(self) -> str | None:
        """The dotted key a clean rejection names."""
        if self.accepted or self.error:
            return None
        return self.output.split("key '", 1)[1].split("'", 1)[0]

    def describe(self) -> str:
        """The command line (without the fixed small sizes), its exit code and first output line, what broke."""
        sets = " ".join(f"--set '{s}'" for s in self.sets[len(BASE) :])
        first = (self.output.strip().splitlines() or [""])[0]
        return f"harmowam recipe show {self.task} {sets}\n  exit {self.exit_code}: {first}\n  {self.error}"


def try_overrides(task: str, sets: list[str]) -> Outcome:
    """`harmowam recipe show TASK --set ...`; an accepted recipe is then built and exercised (`exercise`).
    `error` says what broke the rule (None: nothing)."""
    from typer.testing import CliRunner

    from harmowam_cli.main import app

    args = ["recipe", "show", task]
    for line in sets:
        args += ["--set", line]
    result = CliRunner().invoke(app, args)
    outcome = Outcome(task, sets, result.exit_code, result.output)
    if result.exit_code == 2:
        lines = result.output.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("error: ") or "key 'model.overrides." not in lines[0]:
            outcome.error = "a rejection that is not one line naming a model key"
        return outcome
    if result.exit_code != 0:
        outcome.error = f"exit code {result.exit_code}: {result.exception!r}"
        return outcome
    try:
        exercise(load_recipe(task, sets))
    except Exception as err:  # noqa: BLE001 - every failure of an accepted recipe is what the property reports
        outcome.error = f"accepted, then {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return outcome


# --------------------------------------------------------------------------------------------- exercise
def exercise(recipe: Recipe, batch: int = 2, seed: int = 0) -> None:
    """The recipe's models, randomly initialised (`untrained_models`), through what training and planning call:
    one optimiser step of the world model's flow-matching loss on a clip (a padded frame in it), its prediction
    for each clip (the stage-2 cache's), one optimiser step of the experts' loss on those windows (collated as
    the stage-2 data loader does), and one plan of `HarmoWAMPolicy`. Raises AssertionError on a wrong shape or
    a non-finite number, and whatever a model raises."""
    config = recipe.model_config
    wm_config, chunk, dim = config.world_model, config.action_chunk, recipe.action_dim
    frames, (height, width) = wm_config.num_frames, wm_config.resolution
    wm, experts = untrained_models(recipe, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    camera = recipe.camera("global" if recipe.arms == "dual" else "front")

    def randint(*shape) -> torch.Tensor:
        return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)

    # stage 1: one step on clips of `frames` frames at the camera's size
    clips, previous = (
        randint(batch, frames, 3, camera.height, camera.width),
        randint(batch, 3, camera.height, camera.width),
    )
    is_pad = torch.zeros(batch, frames, dtype=torch.bool)
    is_pad[0, -1] = frames > 1
    wm.train()
    loss = wm(clips, [recipe.instruction] * batch, is_pad, gen, previous)
    loss.backward()
    torch.optim.AdamW(wm.parameters(), lr=1e-3).step()
    assert torch.isfinite(loss), f"world-model loss {loss}"

    # the stage-2 cache: the prediction of each clip's first frame
    wm.eval()
    out = wm.predict(clips[:, 0], [recipe.instruction] * batch, generator=gen, previous=previous)
    spatial, _ = codec_factors(wm_config)
    _, ph, pw = wm_config.patch_size
    latents = latent_frames(frames, wm.codec.temporal)
    tokens = latents * (height // (spatial * ph)) * (width // (spatial * pw))
    assert out.frames.shape == (batch, frames, 3, height, width), out.frames.shape
    assert out.latents.shape[:2] == (batch, frames) and out.latents.shape[-2:] == (height // spatial, width // spatial)
    assert out.hidden.shape == (batch, tokens, wm.hidden_size), out.hidden.shape

    # stage 2: one step on the windows of those predictions
    size = config.predictive_expert.image_size
    images = {cam.role: randint(cam.height, cam.width, 3).numpy() for cam in recipe.cameras}
    cameras = torch.stack([resize_frames(images[cam.role][None], [size, size])[0] for cam in recipe.cameras])
    imagined = (out.frames * 255).round().to(torch.uint8)
    frame_latent = frame_to_latent(frames, wm.codec.temporal)
    windows = []
    for b in range(batch):
        window = expert_inputs(cameras, cameras, torch.zeros(dim), recipe.instruction, imagined[b, 1 : chunk + 1],
                               out.hidden[b].to(torch.float16), frame_latent)  # fmt: skip
        # (the cache keeps the hidden tokens in float16)
        window["action"] = torch.randn(chunk, dim, generator=gen)
        window["action_is_pad"] = torch.arange(chunk) >= chunk - b  # the second window runs past its episode
        window["interaction"] = torch.tensor(b % 2)
        windows.append(window)
    experts.train()
    losses = experts(default_collate(windows), generator=gen)
    losses["loss"].backward()
    torch.optim.AdamW(experts.parameters(), lr=1e-3).step()
    assert all(torch.isfinite(v) for v in losses.values()), losses

    # one plan, as the closed loop makes it
    policy = HarmoWAMPolicy(wm, experts, recipe)
    plan = policy.plan(images, np.zeros(dim, np.float32), recipe.instruction, previous=images)
    assert plan.chunk.shape == (chunk, dim) and np.isfinite(plan.chunk).all(), plan.chunk
    assert plan.imagined.shape == (frames, height, width, 3), plan.imagined.shape
    assert 0.0 <= plan.p_interaction <= 1.0
