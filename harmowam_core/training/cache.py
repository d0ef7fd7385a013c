"""The world-model cache of stage 2: the frozen world model is run once per training window (every frame of
every episode, or every `window_stride`-th), and its outputs (the 12 imagined future frames as uint8 and the feature
block's hidden tokens as float16) are kept on disk, keyed by the world model's weights, the dataset and the
sampling settings: stage 2 never runs the world model again, across epochs or on `--resume`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from harmowam_core.data.reader import DatasetReader
from harmowam_core.data.windows import ClipDataset
from harmowam_core.models.world_model import WorldModelInterface
from harmowam_core.timing import Progress

CACHE_BATCH = 32


# ------------------------------------------------------------------------------------------------ cache
class WorldModelCache:
    """The world model's outputs for every frame of some episodes, in `.npy` files opened memory-mapped:
    `frames` (n, T-1, 3, h, w) uint8, the imagined frames after the current one, and `hidden` (n, N, D)
    float16. Row i belongs to `index[i]` = (episode, frame)."""

    def __init__(self, root: Path):
        self.root = root
        meta = json.loads((root / "index.json").read_text())
        self.index = [tuple(x) for x in meta["index"]]
        self.row = {key: i for i, key in enumerate(self.index)}
        self.frames = np.load(root / "frames.npy", mmap_mode="r", allow_pickle=False)
        self.hidden = np.load(root / "hidden.npy", mmap_mode="r", allow_pickle=False)

    @staticmethod
    def key(wm_dir: Path, reader: DatasetReader, episodes: list[int], steps: int, seed: int, stride: int = 1) -> str:
        """The world model's files (name, size, modification time: re-saving a model changes them, and the
        paper preset's tens of GB are not read), the dataset, the episodes, the window stride, the detour frames
        left out and the sampling settings."""
        h = hashlib.sha256()
        for f in sorted(p for p in wm_dir.rglob("*") if p.is_file()):
            stat = f.stat()
            h.update(f"{f.relative_to(wm_dir).as_posix()}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        settings = [str(reader.root.resolve()), reader.num_frames, episodes, steps, seed]
        h.update(json.dumps(settings + ([stride] if stride != 1 else [])).encode())
        if reader.detour.any():  # detour frames are left out of the windows
            h.update(np.packbits(reader.detour).tobytes())
        return h.hexdigest()[:16]

    @classmethod
    def build(
        cls,
        root: Path,
        wm: WorldModelInterface,
        clips: ClipDataset,
        steps: int,
        seed: int,
        on_progress: Progress | None = None,
    ) -> WorldModelCache:
        """Imagine every window of `clips` once and write the cache (atomically: a `.partial` directory is
        renamed when complete, so an interrupted build is redone, never half-read)."""
        if (root / "index.json").is_file():
            return cls(root)
        partial = root.with_name(root.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        index = clips.index
        t, (h, w) = wm.config.num_frames, wm.config.resolution
        frames = np.lib.format.open_memmap(partial / "frames.npy", "w+", np.uint8, (len(index), t - 1, 3, h, w))
        hidden = None
        generator = torch.Generator(device=wm.device).manual_seed(seed)
        wm.eval()
        for i in range(0, len(index), CACHE_BATCH):
            chunk = index[i : i + CACHE_BATCH]
            current = torch.stack([clips.clip(ep, f)[0][0] for ep, f in chunk])
            previous = torch.stack([clips.previous(ep, f) for ep, f in chunk])
            instructions = [clips.instruction(ep, f) for ep, f in chunk]
            out = wm.predict(current, instructions, steps=steps, generator=generator, previous=previous)
            frames[i : i + len(chunk)] = (out.frames[:, 1:] * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
            if hidden is None:
                shape = (len(index), *out.hidden.shape[1:])
                hidden = np.lib.format.open_memmap(partial / "hidden.npy", "w+", np.float16, shape)
            hidden[i : i + len(chunk)] = out.hidden.to(torch.float16).cpu().numpy()
            if on_progress is not None:
                on_progress("imagine", i + len(chunk), len(index), "")
        frames.flush()
        hidden.flush()
        del frames, hidden
        (partial / "index.json").write_text(json.dumps({"index": [list(k) for k in index], "steps": steps}))
        if root.exists():
            shutil.rmtree(root)
        partial.rename(root)
        return cls(root)
