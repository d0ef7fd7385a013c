"""The frozen encoders the stage-2 experts read with (paper section 3.3): SigLIP for camera images, T5 for the
instruction (predictive expert, gate), DINOv2 for predicted frames (reactive expert).

Each builder takes a checkpoint (a local directory, or a hub id already in the local Hugging Face cache: the
paper preset's `google/siglip-base-patch16-224`, `google-t5/t5-base`, `facebook/dinov2-base`) or None for a
small randomly initialised model of the same class (the tiny preset), built from a fixed seed so that every
tiny model of a configuration is the same encoder. Nothing is downloaded.

    siglip = image_encoder(None, image_size=64)
    tokens = siglip(pixel_values=pixels(frames, 64, SIGLIP_MEAN, SIGLIP_STD)).last_hidden_state   # (B, 16, 64)
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from harmowam_core.errors import HarmoWAMError, first_line
from harmowam_core.models.presets import CONV_ENCODER_STRIDE, TINY_DINOV2_PATCH, TINY_ENCODER_WIDTH, TINY_SIGLIP_PATCH

ENCODER_SEED = 0
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def resolve(name: str | Path) -> Path:
    """A local directory, or a hub id from the local Hugging Face cache; never fetched."""
    path, name = Path(name), str(name)
    if path.is_dir():
        return path
    if name.count("/") == 1 and not name.startswith((".", "/")):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(snapshot_download(name, local_files_only=True))
        except (LocalEntryNotFoundError, ValueError):
            raise HarmoWAMError(
                f"checkpoint '{name}' is neither a local directory nor in the Hugging Face cache; run "
                f"`huggingface-cli download {name}` first or point the recipe at a local directory"
            ) from None
    raise HarmoWAMError(f"checkpoint '{name}' is not a local directory")


def _seeded(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ENCODER_SEED)
        return build()


def _frozen(model: nn.Module) -> nn.Module:
    return model.requires_grad_(False).eval()


def _checkpoint(load, name: str, part: str = "weights"):
    """`load()` of a checkpoint encoder's `part` (its weights: from safetensors only, nothing unpickled, no remote
    code; or its tokenizer); a checkpoint without it, or damaged, is one line naming it (HarmoWAMError)."""
    try:
        return load()
    except (OSError, ValueError) as err:
        hint = "; HarmoWAM loads encoder weights from safetensors files only" if part == "weights" else ""
        raise HarmoWAMError(f"checkpoint '{name}': cannot load its {part} ({first_line(err)[:200]}){hint}") from None


def _vision(model_cls, config_cls, name: str | None, image_size: int, patch_size: int) -> nn.Module:
    if name:
        return _frozen(_checkpoint(lambda: model_cls.from_pretrained(resolve(name), use_safetensors=True), name))
    config = config_cls(
        hidden_size=TINY_ENCODER_WIDTH,
        intermediate_size=2 * TINY_ENCODER_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )
    return _frozen(_seeded(lambda: model_cls(config)))


def image_encoder(name: str | None, image_size: int) -> nn.Module:
    """SigLIP's vision tower (`SiglipVisionModel`): patch tokens of one camera image (16 px patches)."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    return _vision(SiglipVisionModel, SiglipVisionConfig, name, image_size, patch_size=TINY_SIGLIP_PATCH)


def frame_encoder(name: str | None, image_size: int) -> nn.Module:
    """DINOv2 (`Dinov2Model`): patch-level geometric features of a (predicted) frame (8 px patches when tiny)."""
    from transformers import Dinov2Config, Dinov2Model

    return _vision(Dinov2Model, Dinov2Config, name, image_size, patch_size=TINY_DINOV2_PATCH)


def text_encoder(name: str | None, tiny_width: int = TINY_ENCODER_WIDTH):
    """T5's encoder and its tokenizer (the tiny one: a small T5 over a byte-level tokenizer)."""
    from transformers import AutoTokenizer, ByT5Tokenizer, T5Config, T5EncoderModel

    if name:
        path = resolve(name)
        model = _checkpoint(lambda: T5EncoderModel.from_pretrained(path, use_safetensors=True), name)
        return _frozen(model), _checkpoint(lambda: AutoTokenizer.from_pretrained(path), name, "tokenizer")
    heads = max(1, tiny_width // 16)
    config = T5Config(
        vocab_size=384,
        d_model=tiny_width,
        d_kv=tiny_width // heads,
        d_ff=2 * tiny_width,
        num_layers=2,
        num_heads=heads,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
    )
    return _frozen(_seeded(lambda: T5EncoderModel(config))), ByT5Tokenizer()


class WithFrozenParts(nn.Module):
    """A model whose frozen encoders live in `self._frozen` (a dict), outside the module tree: checkpoints,
    optimisers and DDP/FSDP wrappers see only what trains, while `.to()` and friends still move them."""

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for module in self._frozen.values():
            module._apply(fn, recurse)
        return self

    def __deepcopy__(self, memo):
        """A copy (an EMA's, `torch.optim.swa_utils.AveragedModel`) shares the frozen encoders, never copies them:
        they do not train, and the paper preset's SigLIP, T5 and DINOv2 are 0.4B parameters."""
        for module in self._frozen.values():
            memo[id(module)] = module
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new


@torch.no_grad()
def embed_text(
    encoder: nn.Module, tokenizer, cache: dict[str, torch.Tensor], instructions: list[str], max_length: int, device
) -> torch.Tensor:
    """(B, max_length, width) token embeddings of the instructions; each distinct one is encoded once into
    `cache`. Padding tokens are zeroed: they carry nothing."""
    missing = [s for s in dict.fromkeys(instructions) if s not in cache]
    if missing:
        tok = tokenizer(missing, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
        tok = tok.to(device)
        emb = encoder(input_ids=tok.input_ids, attention_mask=tok.attention_mask).last_hidden_state
        emb = emb * tok.attention_mask.unsqueeze(-1).to(emb.dtype)
        for s, e in zip(missing, emb, strict=True):
            cache[s] = e
    return torch.stack([cache[s] for s in instructions]).to(device)


def width(encoder: nn.Module) -> int:
    if isinstance(encoder, ConvEncoder):
        return encoder.width
    config = encoder.config
    return getattr(config, "hidden_size", None) or config.d_model


def unit_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames -> floats in [0, 1]; float frames (already in [0, 1]) as float32."""
    return frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()


def pixels(frames: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """uint8 or [0, 1] frames (..., 3, H, W) -> normalised (N, 3, size, size) float pixels for an encoder."""
    x = unit_float(frames)
    x = x.reshape(-1, *x.shape[-3:])
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


class ConvEncoder(nn.Module):
    """A small convolutional image encoder trained with the experts: the tiny preset's stand-in for the paper's
    pretrained, frozen SigLIP and DINOv2, which a from-scratch model cannot freeze randomly initialised (issue 19,
    cause 1). The kind from-scratch visuomotor policies use (diffusion policy's ResNet with GroupNorm instead of
    BatchNorm, Chi et al. 2023), cut to a CPU's budget: a 4 x 4 stride-4 patchifying stem, a stride-2 and a
    stride-1 3x3 block (GroupNorm, GELU), a 1x1 projection to `width`, and a learned positional embedding so that
    cross-attention knows where each token lies.

    Input (N, 3, S, S) normalised pixels (see `pixels`); output (N, (S / 8)^2, width) patch tokens, a square
    grid row by row (the gate pools it). S must be a multiple of 8."""

    def __init__(self, image_size: int, width: int = TINY_ENCODER_WIDTH, channels: tuple[int, int] = (32, 64)):
        super().__init__()
        if image_size % CONV_ENCODER_STRIDE:
            stride = CONV_ENCODER_STRIDE
            raise ValueError(
                f"a convolutional encoder needs an image size that is a multiple of {stride}, got {image_size}"
            )
        self.image_size, self.width = image_size, width
        c1, c2 = channels
        self.net = nn.Sequential(
            nn.Conv2d(3, c1, 4, stride=4),
            nn.GroupNorm(8, c1),
            nn.GELU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.GroupNorm(8, c2),
            nn.GELU(),
            nn.Conv2d(c2, c2, 3, padding=1),
            nn.GroupNorm(8, c2),
            nn.GELU(),
            nn.Conv2d(c2, width, 1),
        )
        self.grid = image_size // CONV_ENCODER_STRIDE  # the stem's 4 x the stride-2 block's 2
        self.position = nn.Parameter(torch.randn(self.grid * self.grid, width) * 0.02)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.tokens_and_keypoints(pixel_values)[0]

    def tokens_and_keypoints(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The patch tokens (N, (S/8)^2, width) and spatial-softmax keypoints (N, width, 2): per feature channel
        the expected (x, y) in [-1, 1] under a softmax over the grid (Levine et al. 2016), where a channel
        responds most: the arm's or an object's image position in two numbers."""
        features = self.net(pixel_values)  # (N, width, S/8, S/8)
        flat = features.flatten(2)
        weights = torch.softmax(flat, dim=-1)  # (N, width, g*g)
        axis = torch.linspace(-1.0, 1.0, self.grid, device=flat.device, dtype=flat.dtype)
        ys, xs = torch.meshgrid(axis, axis, indexing="ij")
        keypoints = torch.stack([weights @ xs.reshape(-1), weights @ ys.reshape(-1)], dim=-1)
        return flat.transpose(1, 2) + self.position, keypoints


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random-shift augmentation (DrQ, Kostrikov et al. 2020): each image (N, C, H, W), float, is padded by
    `pad` pixels replicating its border and cropped back to H x W at a random offset. Stack frames that must
    move together (a camera's current and previous image) on the channel axis so they share one shift."""
    if pad <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, device=images.device).tolist()
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])
