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

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from harmowam_core.errors import HarmoWAMError

ENCODER_SEED = 0
TINY_WIDTH = 64
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


def _vision(model_cls, config_cls, name: str | None, image_size: int, patch_size: int) -> nn.Module:
    if name:
        return _frozen(model_cls.from_pretrained(resolve(name)))
    config = config_cls(
        hidden_size=TINY_WIDTH,
        intermediate_size=2 * TINY_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )
    return _frozen(_seeded(lambda: model_cls(config)))


def image_encoder(name: str | None, image_size: int) -> nn.Module:
    """SigLIP's vision tower (`SiglipVisionModel`): patch tokens of one camera image (16 px patches)."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    return _vision(SiglipVisionModel, SiglipVisionConfig, name, image_size, patch_size=16)


def frame_encoder(name: str | None, image_size: int) -> nn.Module:
    """DINOv2 (`Dinov2Model`): patch-level geometric features of a (predicted) frame (8 px patches when tiny)."""
    from transformers import Dinov2Config, Dinov2Model

    return _vision(Dinov2Model, Dinov2Config, name, image_size, patch_size=8)


def text_encoder(name: str | None, tiny_width: int = TINY_WIDTH):
    """T5's encoder and its tokenizer (the tiny one: a small T5 over a byte-level tokenizer)."""
    from transformers import AutoTokenizer, ByT5Tokenizer, T5Config, T5EncoderModel

    if name:
        path = resolve(name)
        return _frozen(T5EncoderModel.from_pretrained(path)), AutoTokenizer.from_pretrained(path)
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
    config = encoder.config
    return getattr(config, "hidden_size", None) or config.d_model


def pixels(frames: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """uint8 or [0, 1] frames (..., 3, H, W) -> normalised (N, 3, size, size) float pixels for an encoder."""
    x = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    x = x.reshape(-1, *x.shape[-3:])
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s
