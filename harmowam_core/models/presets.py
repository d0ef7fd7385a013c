"""Model presets: two sizes of one architecture, chosen by name in a recipe (`model.preset`).

`tiny` trains from scratch on a CPU in minutes; `paper` is the configuration of the HarmoWAM paper
(Wan2.2-TI2V-5B world model, ~1B-parameter 28-block action DiT, SigLIP, T5, DINOv2-base), loaded from local
checkpoints with `from_pretrained`. This module is the only place preset values live; a recipe changes them
with `model.overrides`, and the command line with `--set model.overrides.<section>.<key>=value`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# What the models' architectures make of their settings, beside the settings (the recipe checks its overrides
# against these without importing torch; the builders use the same numbers).
WAN_VAE_FACTORS = {"small": (4, 1), "wan2.2": (16, 4)}  # vae_arch -> the wan codec's (spatial, temporal)
# compression (`codecs.build_codec`): the small one halves the image twice; Wan2.2's patchifies 2 x 2, then halves
# it 3 times and the frames twice
WAN_VAE_FRAME_GROUP = 4  # diffusers' AutoencoderKLWan encodes the first frame alone, then the others 4 at a time
# (`_encode`): frames past the last whole group are dropped, whatever the temporal compression
ROPE_MAX_SEQ_LEN = 1024  # positions per axis of the world model's rotary embedding (`build_transformer`)
TINY_ENCODER_WIDTH = 64  # the randomly initialised SigLIP, DINOv2 and T5 of the tiny preset (`models.encoders`)
TINY_SIGLIP_PATCH, TINY_DINOV2_PATCH = 16, 8  # their patch sizes, pixels
CONV_ENCODER_STRIDE = 8  # pixels per token of the convolutional encoder along each side (`encoders.ConvEncoder`)


@dataclass
class WorldModelConfig:
    """Wan-architecture video world model (diffusers `WanTransformer3DModel` + `AutoencoderKLWan`)."""

    pretrained: str | None = None  # local directory or hub id in the diffusers layout; None = random init
    resolution: list[int] = field(default_factory=lambda: [64, 64])  # [height, width] of predicted frames
    num_frames: int = 13  # the current frame and 12 future frames (the action-chunk horizon)
    denoising_steps: int = 5
    num_layers: int = 2
    num_attention_heads: int = 2
    attention_head_dim: int = 32  # hidden width = heads * head_dim
    ffn_dim: int = 256
    patch_size: list[int] = field(default_factory=lambda: [1, 2, 2])  # temporal patch must be 1
    freq_dim: int = 64  # sinusoidal timestep embedding width
    shift: float = 3.0  # flow-matching timestep shift (training, and sampling unless sample_shift is set)
    sample_shift: float | None = 300.0  # the sampler's own shift (None: `shift`); a large one spends the few steps
    # near sigma 1, where the x0 prediction is the mean of the possible futures (measurements: docs/design-notes.md)
    condition: Literal["first", "concat"] = "concat"  # the current frame: clean first latent only (Wan2.2 TI2V),
    # or also concatenated on the channels of every latent frame (Wan2.1 I2V), so each token sees it in place
    context_frames: int = 2  # 1: the current frame; 2: also the one before it, concatenated like the current
    # (needs condition "concat"): one 64 px frame does not tell whether the arm is pausing or which way it moves
    prediction: Literal["velocity", "sample"] = "sample"  # the transformer's output: velocity (Wan2.2) or clean x0
    sigma_data: float = 0.12  # prediction "sample": the clean latents' std for the skip preconditioning
    # x0 = c_skip(sigma) x_t + c_out(sigma) F (Karras et al. 2022, EDM), so near sigma 0 the output is the input
    # itself rather than the network's lossy copy of it; 0 turns the preconditioning off (x0 = F)
    output_gate: bool = True  # prediction "sample": one more output channel, a sigmoid per latent pixel that
    # multiplies the network's output there, so a still region can be predicted as exactly still
    codec: Literal["wan", "pixel"] = "pixel"  # "wan" (AutoencoderKLWan) or "pixel" (space-to-depth of the pixels,
    # nothing to train)
    pixel_patch: int = 4  # the pixel codec's space-to-depth factor
    pixel_residual: bool = True  # pixel codec: future latents hold the difference from the current frame
    pixel_residual_scale: float = 1.0  # ... times this (8 brings stack_cans differences to unit variance; why
    # 1 stays the default: docs/design-notes.md)
    latent_channels: int = 8  # the wan codec's latent channels (the pixel codec has 3 * pixel_patch^2)
    vae_base_dim: int = 16
    vae_arch: Literal["small", "wan2.2"] = "small"  # a random wan codec's architecture: "small" (4x spatial) or
    # "wan2.2" (16x, 4x time)
    text_encoder: Literal["umt5", "byte-t5"] = "byte-t5"  # "umt5" (paper, from `pretrained`) or "byte-t5" (tiny T5
    # with a byte-level tokenizer)
    text_dim: int = 64
    max_text_tokens: int = 64
    feature_block: int = -1  # which transformer block's hidden tokens feed the experts (-1 = last)


@dataclass
class PredictiveExpertConfig:
    """Action Diffusion Transformer conditioned by cross-attention on world-model, image and text tokens."""

    hidden_size: int = 128  # tiny: the size measured against 64 x 2 in docs/learning.md
    num_layers: int = 4
    num_attention_heads: int = 4
    image_backbone: Literal["siglip", "conv"] = "conv"  # conv: a small convolutional encoder trained with the
    # experts (tiny); siglip: the frozen SigLIP of `image_encoder` (the paper)
    image_encoder: str | None = None  # SigLIP checkpoint (local dir / hub id); None = small random SigLIP
    image_size: int = 96  # the cameras' 96 px: at 64 px a can on the front camera is a few pixels
    augment_shift: int = 4  # random-shift augmentation of the camera images in training, pixels (0: none)
    crops: dict[str, list[float]] | None = None  # camera name -> [top, left, height, width], fractions of its
    # frame: the box the predictive expert and the gate read, resized to image_size (issue 19, cause 6: at 96 px
    # the top camera shows a can's rim as a 3-4 px ring); a camera not named, and None, is read whole
    keypoints: bool = True  # conv backbone: every camera's spatial-softmax keypoints also join the adaLN
    # condition beside the timestep and the state, as diffusion policy's global condition (Chi et al. 2023): where
    # the arm and each object appear, as coordinates every block reads, not only through cross-attention
    text_encoder: str | None = None  # T5 encoder checkpoint; None = small random T5
    obs_steps: int = 2  # observations the expert reads (diffusion policy's n_obs_steps, Chi et al. 2023): 1, the
    # current one; 2, also the state one control step earlier, as its standardised change beside the state in the
    # adaLN condition (an open gripper over a can is about to descend or has just released: one state cannot say)
    speed_augment: list[float] | None = None  # obs_steps 2, training: the state's change scaled by a factor drawn
    # per window from [low, high] (the same motion, slower or faster). Without it the expert reads the demonstrated
    # speed as a phase cue: between 12 and 20 cm the scripted expert moves an open gripper down at 8-9 mm per step
    # or up at 5 mm or more, never in between, and a learned policy handing over at 0-6 mm per step is neither
    gripper_head: bool = False  # the gripper command from a classification head of its own (issue 19, ladder b):
    # learned chunk queries through `gripper_layers` DiT blocks, trained with binary cross-entropy on the command
    # (closed above 0.5); its probability replaces the denoised gripper number. False: denoised with the rest
    gripper_layers: int = 2
    train_timesteps: int = 100
    inference_steps: int = 10
    prediction: Literal["epsilon", "sample"] = "sample"  # what the DiT outputs: the noise (the paper, diffusion
    # policy) or the clean chunk (the tiny preset, trained from scratch; measurements: docs/design-notes.md)


@dataclass
class ReactiveExpertConfig:
    """DINOv2 patch tokens + pooled world-model latents, multi-scale convolutional orientation decoder."""

    frame_backbone: Literal["dinov2", "conv"] = "conv"  # conv: a small convolutional encoder trained with the
    # experts (tiny); dinov2: the frozen DINOv2 of `dino` (the paper)
    dino: str | None = None  # Dinov2 checkpoint; None = small random Dinov2
    dino_width: int = 64  # the width world-model latents are average-pooled to (768 for dinov2-base)
    image_size: int = 64
    decoder_channels: int = 64
    decoder_kernel_sizes: list[int] = field(default_factory=lambda: [1, 3, 5])
    smooth_l1_beta: float = 1.0
    augment_shift: int = 0  # random-shift augmentation of the frames in training, pixels (0: none). Off in the
    # tiny preset: without a state input the expert reads the arm's absolute position from where it appears in
    # the frame, and a shift moves it there but not in the label
    train_frames: int | None = 4  # frames of each window's chunk the training loss reads, drawn at random (None:
    # all). Each action is read from its own frame, so a subset is an unbiased estimate of the same loss, at a
    # fraction of the cost (timings: docs/design-notes.md)


@dataclass
class GateModelConfig:
    """The process-adaptive gate: an MLP on the current observation's visual tokens."""

    hidden_sizes: list[int] = field(default_factory=lambda: [64])
    pool_grid: int = 4  # each camera's patch tokens are average-pooled to this square grid (measurements:
    # docs/design-notes.md)
    dropout: float = 0.0
    motion: bool = True  # also the pooled tokens' change since the previous control step (descending to grasp
    # and lifting away look alike in one frame); the paper's gate reads the current tokens only
    world_model: bool = True  # also the world model's hidden tokens of this step, averaged per latent frame: the
    # imagined next 0.6 s, which foresees the gripper events whose label window opens frames before them. The
    # paper's gate reads the visual tokens only; the latent ablation drops this input (measurements:
    # docs/design-notes.md)


@dataclass
class ModelConfig:
    """Everything needed to build the HarmoWAM models of one preset."""

    action_chunk: int = 12
    action_targets: Literal["delta", "absolute", "pose"] = "absolute"  # what the experts predict: the dataset's
    # delta actions, absolute position targets (state + delta, rotation still a delta), or `pose`: position and
    # orientation both absolute (see `action_space`); targets are converted back to deltas against the observed
    # state at every executed step
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    predictive_expert: PredictiveExpertConfig = field(default_factory=PredictiveExpertConfig)
    reactive_expert: ReactiveExpertConfig = field(default_factory=ReactiveExpertConfig)
    gate: GateModelConfig = field(default_factory=GateModelConfig)


# Values that differ from the dataclass defaults (which are the tiny sizes), per preset.
PRESETS: dict[str, dict] = {
    "tiny": {},
    "paper": {
        "action_targets": "delta",  # the paper's action space
        "world_model": {
            "pretrained": "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
            "resolution": [480, 640],
            "num_layers": 30,
            "num_attention_heads": 24,
            "attention_head_dim": 128,  # 3072 wide
            "ffn_dim": 14336,
            "freq_dim": 256,
            "shift": 5.0,
            "sample_shift": None,
            "condition": "first",
            "context_frames": 1,
            "prediction": "velocity",
            "sigma_data": 0.0,
            "output_gate": False,
            "codec": "wan",
            "latent_channels": 48,
            "vae_base_dim": 160,
            "vae_arch": "wan2.2",
            "text_encoder": "umt5",
            "text_dim": 4096,
            "max_text_tokens": 512,
        },
        "predictive_expert": {
            "hidden_size": 1280,
            "num_layers": 28,
            "num_attention_heads": 20,
            "image_backbone": "siglip",
            "image_encoder": "google/siglip-base-patch16-224",
            "image_size": 224,
            "augment_shift": 0,
            "keypoints": False,
            "text_encoder": "google-t5/t5-base",
            "obs_steps": 1,
            "train_timesteps": 100,
            "inference_steps": 10,
            "prediction": "epsilon",
        },
        "reactive_expert": {
            "frame_backbone": "dinov2",
            "dino": "facebook/dinov2-base",
            "augment_shift": 0,
            "train_frames": None,
            "dino_width": 768,
            "image_size": 224,
            "decoder_channels": 256,
            "decoder_kernel_sizes": [1, 3, 5],
        },
        "gate": {"hidden_sizes": [512, 128], "dropout": 0.1, "motion": False, "world_model": False},
    },
}


def preset_names() -> list[str]:
    return list(PRESETS)


def codec_factors(config: WorldModelConfig) -> tuple[int, int]:
    """The world model codec's (spatial, temporal) compression: pixels per latent pixel along each side, video
    frames per latent frame after the first. Pixel codec: (`pixel_patch`, 1); wan codec: `WAN_VAE_FACTORS`."""
    if config.codec == "pixel":
        return config.pixel_patch, 1
    return WAN_VAE_FACTORS[config.vae_arch]
