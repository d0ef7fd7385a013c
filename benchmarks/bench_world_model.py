"""World-model prediction latency against the number of denoising steps (paper Table 9), measured in one run.

    python benchmarks/bench_world_model.py [--steps 3 5 10 50] [--repeats 5] [--batch 1] [--paper]

For each step count: the median wall time of `WorldModel.predict` (one 13-frame future from the current frame:
encode, denoise, decode; the instruction's text embedding is cached, as in closed loop), and its ratio to the
5-step default. The tiny preset runs on the CPU with the threads torch has; `--paper` adds the paper preset
(Wan2.2-TI2V-5B architecture, random weights, bf16) on a CUDA device when there is one.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from harmowam_core.models.presets import PRESETS, WorldModelConfig
from harmowam_core.models.world_model import WorldModel, parameter_count

INSTRUCTION = "stack the coke cans"


def build(preset: str, device: str, dtype: torch.dtype) -> WorldModel:
    config = dataclasses.replace(WorldModelConfig(), **PRESETS[preset].get("world_model", {}))
    config = dataclasses.replace(config, pretrained=None)
    if config.text_encoder == "umt5":
        # UMT5-XXL only ever runs once per instruction (the embedding is cached): a random encoder of the same
        # width stands in, and the cache is filled with a random embedding of UMT5's shape.
        config = dataclasses.replace(config, text_encoder="byte-t5")
    torch.manual_seed(0)
    with torch.device(device):
        wm = WorldModel.from_config(config)
    if dtype != torch.float32:
        wm.transformer.to(dtype)  # paper on a GPU: bf16 weights, as training and deployment run them
    wm.eval()
    if preset != "tiny":
        wm._text_cache[INSTRUCTION] = torch.randn(config.max_text_tokens, config.text_dim, device=device)
    return wm


def latency(wm: WorldModel, steps: int, batch: int, repeats: int) -> float:
    h, w = wm.config.resolution
    current = torch.rand(batch, 3, h, w)
    sync = torch.cuda.synchronize if wm.device.type == "cuda" else (lambda: None)
    wm.predict(current, [INSTRUCTION] * batch, steps=steps)  # warm-up (kernels, allocator, text cache)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        wm.predict(current, [INSTRUCTION] * batch, steps=steps)
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(name: str, wm: WorldModel, step_counts: list[int], batch: int, repeats: int) -> None:
    print(
        f"\n{name}: {parameter_count(wm.transformer) / 1e6:.1f}M transformer parameters, "
        f"{wm.config.resolution[0]}x{wm.config.resolution[1]}, {wm.config.num_frames} frames, batch {batch}, "
        f"{wm.device.type}" + (f" ({torch.get_num_threads()} threads)" if wm.device.type == "cpu" else "")
    )
    results = {k: latency(wm, k, batch, repeats) for k in step_counts}
    base = results.get(5) or results[step_counts[0]]
    print(f"{'steps':>6} {'latency (s)':>12} {'per step (ms)':>14} {'vs 5 steps':>11}")
    for k, t in results.items():
        print(f"{k:>6} {t:>12.3f} {1000 * t / k:>14.1f} {t / base:>10.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[3, 5, 10, 50])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--paper", action="store_true", help="also the paper preset on a CUDA device")
    args = parser.parse_args()
    with torch.no_grad():
        report("tiny preset", build("tiny", "cpu", torch.float32), args.steps, args.batch, args.repeats)
        if args.paper:
            if not torch.cuda.is_available():
                print("\npaper preset: skipped (no CUDA device)")
                return
            wm = build("paper", "cuda", torch.bfloat16)
            report("paper preset", wm, args.steps, args.batch, args.repeats)
            print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
