"""The stage-2 models as one unit: predictive expert, reactive expert, gate and the action normalisation.

    experts = Experts(ExpertsConfig(predictive, reactive, gate, action_dim=7, state_dim=7, num_cameras=3,
                                    wm_width=64, wm_latent_frames=13),
                      Normalizer.from_arrays(actions, states, state_changes=changes))  # changes: obs_steps 2
    losses = experts(batch)                       # {"loss", "pred", "react", "gate"}: the stage-2 objective
    experts.save_pretrained("runs/stack_cans/experts/model")
    experts = Experts.from_pretrained("runs/stack_cans/experts/model")

`forward` is the training objective (lambda_pred * L_pred + lambda_react * L_react + L_gate, plus lambda_pred
times the gripper head's cross-entropy when the predictive expert has one), so that a DDP wrapper syncs the
gradients of all. Actions and states are standardised with the training set's statistics (kept with the
weights); the experts see and produce standardised actions, `Normalizer` converts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from harmowam_core.action_space import PER_ARM, position_mask
from harmowam_core.errors import HarmoWAMError, first_line
from harmowam_core.models import encoders
from harmowam_core.models.gate import Gate
from harmowam_core.models.predictive_expert import PredictiveExpert
from harmowam_core.models.presets import GateModelConfig, PredictiveExpertConfig, ReactiveExpertConfig
from harmowam_core.models.reactive_expert import ReactiveExpert
from harmowam_core.timing import timed

CONFIG_NAME = "harmowam_experts.json"
WEIGHTS_NAME = "experts.safetensors"
STD_FLOOR = 1e-4  # a dimension whose scale stays below this is constant: it passes through unscaled (scale 1)
RANGE_FLOOR = 10.0  # no dimension's scale is below its demonstrated range / RANGE_FLOOR (see `robust_scale`)
CLAMP_MARGIN = 1.0  # the sampler's clamp window reaches at least this many scales either side of the mean


def robust_scale(x: torch.Tensor) -> torch.Tensor:
    """The standardisation scale of each dimension of x (N, D): its std, floored at its range / RANGE_FLOOR;
    1 (pass through unscaled) where that stays below STD_FLOOR, a constant dimension. Returns (D,).

    Why the floor: by Samuelson's inequality (Samuelson 1968, "How deviant can you be?", JASA 63, 1522) a frame
    standardised by the std alone can lie sqrt(N - 1) standard deviations from the mean. That bound is reached
    by a near-constant dimension: a roll that is 0 on 2,033 frames and 0.01 rad on one has std 2.2e-4, and the
    odd frame standardises to 45. Flooring the scale at the range / 10 (the range-based scaling of min-max
    normalisation, as in diffusion_policy's `LinearNormalizer` and LeRobot's MIN_MAX, used here only as a
    floor) bounds every training value to |z| <= 10, whatever the dimension's distribution. A Gaussian
    dimension of up to ~1e6 frames spans less than 10 std, so ordinary dimensions keep their std."""
    x = torch.as_tensor(x, dtype=torch.float64)
    spread = x.max(0).values - x.min(0).values
    scale = torch.maximum(x.std(0, unbiased=False), spread / RANGE_FLOOR)
    return torch.where(scale < STD_FLOOR, torch.ones_like(scale), scale)


@dataclass
class Normalizer:
    """Standardisation of actions and states: x -> (x - mean) / std, per dimension, where `std` is the scale of
    `robust_scale` (the std floored at range / 10; files saved before the floor keep the scale they were
    trained with). Action ranges are kept for the sampler's clamp (`action_bounds`)."""

    action_mean: list[float]
    action_std: list[float]
    state_mean: list[float]
    state_std: list[float]
    action_min: list[float] | None = None  # the demonstrated range per action number (None: unbounded)
    action_max: list[float] | None = None
    delta_min: list[float] | None = None  # absolute targets: the demonstrated range of the deltas they came from
    delta_max: list[float] | None = None
    state_change_std: list[float] | None = None  # the scale of the state's change per control step (None: unknown)
    state_min: list[float] | None = None  # the demonstrated range per state number (None: saved before it was kept)
    state_max: list[float] | None = None

    @classmethod
    def from_arrays(cls, actions, states, deltas=None, state_changes=None) -> Normalizer:
        """Statistics of what the experts predict (`actions`: deltas, or absolute targets with the `deltas`
        they were made from), of the states and of their changes per control step (`state_changes`, see
        `action_space.state_change`), over the training frames."""
        a, s = torch.as_tensor(actions, dtype=torch.float64), torch.as_tensor(states, dtype=torch.float64)

        low, high = a.min(0).values.tolist(), a.max(0).values.tolist()
        out = cls(a.mean(0).tolist(), robust_scale(a).tolist(), s.mean(0).tolist(), robust_scale(s).tolist(), low, high)
        out.state_min, out.state_max = s.min(0).values.tolist(), s.max(0).values.tolist()
        if deltas is not None:
            d = torch.as_tensor(deltas, dtype=torch.float64)
            out.delta_min, out.delta_max = d.min(0).values.tolist(), d.max(0).values.tolist()
        if state_changes is not None:
            out.state_change_std = robust_scale(torch.as_tensor(state_changes, dtype=torch.float64)).tolist()
        return out

    def action_bounds(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The sampler's clamp window, standardised, (A,) each, on `like`'s device (None when no range was
        recorded): the demonstrated action range, widened where needed to reach CLAMP_MARGIN scales either side
        of the mean (never by more than the range itself, so a constant dimension stays pinned to its value).

        Why: a near-constant dimension has its mean at an edge of its range (a roll at 0 but for one frame at
        0.01: window [-0.02, +45] std), and clamping the sampler's symmetric error around the mean into such a
        window rectifies it: every executed roll comes out positive. With the margin the window is at least
        [-1, +1] scales about the mean, so an error of about a scale keeps its sign balance; a dimension whose
        mean lies a scale or more inside its range (every ordinary one) keeps the demonstrated range."""
        if self.action_min is None or self.action_max is None:
            return None
        low = torch.tensor(self.action_min, dtype=torch.float32, device=like.device)
        high = torch.tensor(self.action_max, dtype=torch.float32, device=like.device)
        mean, std = self._pair("action", like)
        margin = torch.minimum(CLAMP_MARGIN * std, high - low)
        low, high = torch.minimum(low, mean - margin), torch.maximum(high, mean + margin)
        return self.normalize_action(low), self.normalize_action(high)

    def chunk_bounds(self, state: torch.Tensor, chunk: int, absolute: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Standardised (low, high) for the sampler's clamp: the demonstrated range per action number, (A,); for
        absolute targets (B, chunk, A), where a position target of chunk step k may lie at most k + 1 of the
        largest demonstrated steps from the current position `state` (B, S): bounded where the arm can go from
        here, not by where the demonstrations went (that would keep it out of position-OOD scenes)."""
        bounds = self.action_bounds(state)
        if bounds is None or not absolute or self.delta_min is None or self.delta_max is None:
            return bounds
        low = self.denormalize_action(bounds[0]).expand(state.shape[0], chunk, -1).clone()
        high = self.denormalize_action(bounds[1]).expand(state.shape[0], chunk, -1).clone()
        position = torch.from_numpy(position_mask(low.shape[-1])).to(state.device)
        steps = torch.arange(1, chunk + 1, device=state.device, dtype=torch.float32).view(1, -1, 1)
        here = state.float().unsqueeze(1)  # (B, 1, S): the state's positions sit where the targets' do
        d_low = torch.tensor(self.delta_min, dtype=torch.float32, device=state.device)
        d_high = torch.tensor(self.delta_max, dtype=torch.float32, device=state.device)
        low = torch.where(position, here + steps * d_low.clamp(max=0.0), low)
        high = torch.where(position, here + steps * d_high.clamp(min=0.0), high)
        return self.normalize_action(low), self.normalize_action(high)

    def _pair(self, name: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(getattr(self, f"{name}_mean"), dtype=torch.float32, device=like.device)
        return mean, torch.tensor(getattr(self, f"{name}_std"), dtype=torch.float32, device=like.device)

    def normalize_action(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._pair("action", x)
        return (x.float() - mean) / std

    def denormalize_action(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._pair("action", x)
        return x.float() * std + mean

    def normalize_state(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._pair("state", x)
        return (x.float() - mean) / std

    def bound_rotation(self, z: torch.Tensor) -> torch.Tensor:
        """A standardised state (..., S) with each arm's rotation numbers (roll, pitch, yaw: numbers 3-5 of 7)
        clamped into their demonstrated range; positions and the gripper pass as they are (a position-OOD scene
        needs the arm's true position). Unchanged when the range was not recorded or the state is not 7 numbers
        per arm.

        Why: the learned experts command rotation deltas, so the orientation integrates their errors with no
        feedback. Under the gate router stack_cans' gripper reaches the predictive expert at a roll of 0.02-0.12
        rad (later up to 0.5), where the demonstrations keep it within [-0.041, 0.047] rad (scale 0.0088):
        standardised, up to 13 scales from the mean. Read as it is, the predictive expert rises and closes on
        nothing at the gate's handovers (traces and closed-loop measurements: docs/learning.md, stop 35)."""
        if self.state_min is None or self.state_max is None or z.shape[-1] % PER_ARM:
            return z
        low = self.normalize_state(torch.tensor(self.state_min, dtype=torch.float32, device=z.device))
        high = self.normalize_state(torch.tensor(self.state_max, dtype=torch.float32, device=z.device))
        number = torch.arange(z.shape[-1], device=z.device) % PER_ARM
        rotation = (number >= 3) & (number < 6)
        return torch.where(rotation, torch.minimum(torch.maximum(z.float(), low), high), z.float())

    def normalize_state_change(self, x: torch.Tensor) -> torch.Tensor:
        """A change of state per control step (..., S), divided by its training scale (not centred: no change
        stays 0). Raises `ValueError` when the statistics were saved without it."""
        if self.state_change_std is None:
            raise ValueError("these statistics have no state_change_std: Normalizer.from_arrays(state_changes=...)")
        return x.float() / torch.tensor(self.state_change_std, dtype=torch.float32, device=x.device)


@dataclass
class ExpertsConfig:
    predictive: PredictiveExpertConfig
    reactive: ReactiveExpertConfig
    gate: GateModelConfig
    action_dim: int
    state_dim: int
    num_cameras: int
    wm_width: int
    wm_latent_frames: int = 0  # latent frames in the world model's hidden tokens (needed by a gate that reads them)
    chunk: int = 12
    use_wm_latents: bool = True  # False: the paper's latent ablation (no world-model tokens in either expert)
    action_targets: str = "delta"  # what the experts predict: "delta" actions, "absolute" position targets or
    # "pose" targets (position and rotation; action_space)
    cameras: list[str] = field(default_factory=list)  # the camera order of `images` (the dataset's)
    lambda_pred: float = 1.0
    lambda_react: float = 1.0

    @classmethod
    def from_dict(cls, d: dict) -> ExpertsConfig:
        d = dict(d)
        # files saved before the trained encoders were added read with the frozen ones they were trained on
        old_predictive = {
            "image_backbone": "siglip",
            "augment_shift": 0,
            "keypoints": False,
            "obs_steps": 1,
            "gripper_head": False,
        }
        d["predictive"] = PredictiveExpertConfig(**{**old_predictive, **d["predictive"]})
        old_reactive = {"frame_backbone": "dinov2", "augment_shift": 0, "train_frames": None}
        d["reactive"] = ReactiveExpertConfig(**{**old_reactive, **d["reactive"]})
        d["gate"] = GateModelConfig(**d["gate"])
        return cls(**d)


class Experts(nn.Module):
    def __init__(self, config: ExpertsConfig, normalizer: Normalizer):
        super().__init__()
        self.config, self.normalizer = config, normalizer
        self.predictive = PredictiveExpert(
            config.predictive, config.action_dim, config.state_dim, config.wm_width, config.num_cameras, config.chunk
        )
        self.reactive = ReactiveExpert(config.reactive, config.action_dim, config.wm_width)
        gate_wm = None
        if config.gate.world_model and config.use_wm_latents:
            if config.wm_latent_frames < 1:
                raise ValueError("a gate that reads the world model needs ExpertsConfig.wm_latent_frames")
            gate_wm = (config.wm_latent_frames, config.wm_width)
        self.gate = Gate(config.gate, self.predictive.image_width, config.num_cameras, world_model=gate_wm)

    @property
    def device(self) -> torch.device:
        return self.predictive.device

    # ------------------------------------------------------------------------------------------- training
    def _inputs(
        self, batch: dict, timings: dict[str, float] | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor | None,
               torch.Tensor | None]:  # fmt: skip
        """SigLIP tokens of the current images and, for a gate with `motion`, of `previous_images` (the images
        one control step earlier; None when the batch has none), the world model's hidden tokens, the predictive
        expert's condition tokens, the standardised state (with `obs_steps` 2, its scaled change since the previous
        control step after it, in training scaled per window as `speed_augment` says; rotations clamped by
        `Normalizer.bound_rotation`: the predictive expert's proprioceptive input), the world model's per-frame
        tokens for the reactive expert (the world model's tokens are None in the latent ablation), and the cameras'
        keypoints for the predictive expert's adaLN condition (None unless it reads them)."""
        device, use_wm = self.device, self.config.use_wm_latents
        with timed(timings, "image encoder"):
            images = batch["images"].to(device)
            previous = batch.get("previous_images") if self.config.gate.motion else None
            previous = None if previous is None else previous.to(device)
            if self.training:
                images, previous = self._augment(images, previous, generator)
            image_tokens, keypoints = self.predictive.image_features(images)
            previous_tokens = None if previous is None else self.predictive.image_tokens(previous)
        wm_hidden = batch["wm_hidden"].to(device) if use_wm else None
        with timed(timings, "predictive expert"):
            cond = self.predictive.condition(None, wm_hidden, batch["instruction"], image_tokens)
            state = self.normalizer.bound_rotation(self.normalizer.normalize_state(batch["state"].to(device)))
            if self.predictive.config.obs_steps == 2:
                change = self.normalizer.normalize_state_change(batch["state_change"].to(device))
                speed = self.predictive.config.speed_augment
                if self.training and speed:
                    low, high = speed
                    draw = torch.rand((change.shape[0], 1), generator=generator, device=change.device)
                    change = change * (low + (high - low) * draw)
                state = torch.cat([state, change], dim=-1)
        frame_tokens = batch["wm_frame_tokens"].to(device) if use_wm else None
        return image_tokens, previous_tokens, wm_hidden, cond, state, frame_tokens, keypoints

    def _augment(
        self, images: torch.Tensor, previous: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Random shifts of the (B, cams, 3, H, W) camera images in training (`augment_shift` pixels), a camera's
        current and previous image shifted alike; returned as floats in [0, 1]."""
        pad = self.predictive.config.augment_shift
        if pad <= 0:
            return images, previous
        b, cams = images.shape[:2]
        parts = [encoders.unit_float(images)] + ([] if previous is None else [encoders.unit_float(previous)])
        stacked = torch.cat(parts, dim=2).flatten(0, 1)  # (B * cams, 3 or 6, H, W)
        shifted = encoders.random_shift(stacked, pad, generator).unflatten(0, (b, cams))
        if previous is None:
            return shifted, None
        return shifted[:, :, :3], shifted[:, :, 3:]

    def _reactive_frames(
        self,
        frames: torch.Tensor,
        frame_tokens: torch.Tensor | None,
        actions: torch.Tensor,
        pad: torch.Tensor,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """In training, the `reactive_expert.train_frames` of each window's K frames its loss reads, drawn at
        random per window from `generator`: frames (B, k, 3, h, w), their tokens (B, k, n, D) or None, actions
        (B, k, A) and pad mask (B, k). All K when `train_frames` is None or not below K."""
        keep = self.reactive.config.train_frames
        b, k = frames.shape[:2]
        if not self.training or keep is None or keep >= k:
            return frames, frame_tokens, actions, pad
        scores = torch.rand((b, k), generator=generator, device=frames.device)
        pick = scores.argsort(dim=1)[:, :keep].sort(dim=1).values  # (B, keep) frame indices, in order
        rows = torch.arange(b, device=frames.device).unsqueeze(1)
        tokens = None if frame_tokens is None else frame_tokens[rows, pick]
        return frames[rows, pick], tokens, actions[rows, pick], pad[rows, pick]

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The stage-2 losses of a batch (see `training.experts.ExpertWindows` for its fields)."""
        device = self.device
        image_tokens, previous_tokens, wm_hidden, cond, state, frame_tokens, keypoints = self._inputs(
            batch, generator=generator
        )
        actions = self.normalizer.normalize_action(batch["action"].to(device))
        pad = batch["action_is_pad"].to(device)
        pred = self.predictive.loss(cond, state, actions, pad, generator=generator, keypoints=keypoints)
        frames, frame_tokens, react_actions, react_pad = self._reactive_frames(
            batch["frames"].to(device), frame_tokens, actions, pad, generator
        )
        react = self.reactive.loss(frames, frame_tokens, react_actions, react_pad, generator=generator)
        gate = self.gate.loss(image_tokens, batch["interaction"].to(device), previous_tokens, wm_hidden)
        loss = self.config.lambda_pred * pred + self.config.lambda_react * react + gate
        out = {"pred": pred.detach(), "react": react.detach(), "gate": gate.detach()}
        if self.predictive.gripper_blocks is not None:  # the demonstrated command closes above 0.5 (both stations)
            closed = batch["action"].to(device)[..., self.predictive.gripper_index] > 0.5
            gripper = self.predictive.gripper_loss(cond, state, closed, pad, keypoints=keypoints)
            loss = loss + self.config.lambda_pred * gripper
            out["gripper"] = gripper.detach()
        return {"loss": loss, **out}

    # ------------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def act(
        self,
        batch: dict,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        timings: dict[str, float] | None = None,
    ) -> dict:
        """Both experts' action chunks (B, chunk, A) in the dataset's units and the gate's p(interaction) (B,).
        With a gripper head, the predictive chunk's gripper numbers are its p(closed), in [0, 1].
        `timings`, when given, receives the seconds of each part (image encoder, gate, predictive, reactive)."""
        image_tokens, previous_tokens, wm_hidden, cond, state, frame_tokens, keypoints = self._inputs(batch, timings)
        with timed(timings, "gate"):
            p_interaction = self.gate.probability(image_tokens, previous_tokens, wm_hidden)
        with timed(timings, "predictive expert"):
            raw_state = batch["state"].to(self.device)
            absolute = self.config.action_targets in ("absolute", "pose")
            bounds = self.normalizer.chunk_bounds(raw_state, self.config.chunk, absolute)
            predictive = self.predictive.sample(
                cond, state, steps=steps, generator=generator, bounds=bounds, keypoints=keypoints
            )
            predictive = self.normalizer.denormalize_action(predictive)
            if self.predictive.gripper_blocks is not None:
                predictive[..., self.predictive.gripper_index] = self.predictive.gripper_probability(
                    cond, state, keypoints
                )
        with timed(timings, "reactive expert"):
            reactive = self.reactive(batch["frames"].to(self.device), frame_tokens)
        return {
            "predictive": predictive,
            "reactive": self.normalizer.denormalize_action(reactive),
            "p_interaction": p_interaction,
        }

    # ------------------------------------------------------------------------------------------- files
    def save_pretrained(self, path: str | Path, with_encoders: bool = False) -> Path:
        """`harmowam_experts.json` (configuration and normalisation) and `experts.safetensors` (the trained
        weights). The frozen encoders are rebuilt on loading from the configuration's checkpoints (or, tiny,
        their fixed seed); `with_encoders` copies checkpoint encoders into `encoders/` so the directory stands
        alone (a policy bundle)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_NAME))
        config = asdict(self.config)
        if with_encoders:
            frozen = self.predictive._frozen
            parts = [
                ("predictive", "image_encoder", "siglip", frozen.get("image"), None),
                ("predictive", "text_encoder", "t5", frozen["text"], self.predictive.tokenizer),
                ("reactive", "dino", "dinov2", self.reactive.dino, None),
            ]
            for section, key, name, model, tokenizer in parts:
                # a checkpoint in use: copy it; a seeded tiny or a trained convolutional encoder needs nothing
                if config[section][key] and model is not None:
                    model.save_pretrained(path / "encoders" / name)
                    if tokenizer is not None:
                        tokenizer.save_pretrained(path / "encoders" / name)
                    config[section][key] = f"encoders/{name}"
        meta = {"config": config, "normalizer": asdict(self.normalizer)}
        (path / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Experts:
        path = Path(path)
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise HarmoWAMError(f"{path}: not a saved HarmoWAM experts directory (no {CONFIG_NAME} / {WEIGHTS_NAME})")
        meta = json.loads((path / CONFIG_NAME).read_text())
        config = ExpertsConfig.from_dict(meta["config"])
        for section, key in (("predictive", "image_encoder"), ("predictive", "text_encoder"), ("reactive", "dino")):
            name = getattr(getattr(config, section), key)
            if name and name.startswith("encoders/"):  # copied in by save_pretrained(with_encoders=True)
                setattr(getattr(config, section), key, str(path / name))
        experts = cls(config, Normalizer(**meta["normalizer"]))
        try:  # a truncated or foreign file: one line naming it, not safetensors' or torch's traceback
            weights = load_file(str(path / WEIGHTS_NAME))
            experts.load_state_dict(weights)
        except (SafetensorError, OSError, RuntimeError) as err:
            raise HarmoWAMError(
                f"{path / WEIGHTS_NAME}: cannot load the experts' weights ({first_line(err)[:200]}); "
                "the file is damaged or from another configuration"
            ) from None
        return experts.eval()
