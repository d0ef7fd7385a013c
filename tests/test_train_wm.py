"""Stage 1 end to end: `harmowam train-wm` on a small dataset writes a loadable model, previews, an evaluation
against the copy baseline, and resumes where it stopped."""

from __future__ import annotations

import json
from functools import partial

import av
import numpy as np
import torch
from conftest import stopped_and_resumed
from tensorboard_events import scalars
from typer.testing import CliRunner

from harmowam_cli.main import app
from harmowam_core.config import load_recipe
from harmowam_core.data.reader import DatasetReader
from harmowam_core.data.windows import ClipDataset
from harmowam_core.models.world_model import WorldModel
from harmowam_core.training.reports import clip_starts, psnr
from harmowam_core.training.world_model import world_model_camera

runner = CliRunner()
SMALL = [
    "--set",
    "model.overrides={world_model: {resolution: [32, 32]}}",
    "--set",
    "train_wm={steps: 6, batch_size: 2, warmup_steps: 1, checkpoint_every: 3, preview_every: 3, held_out_episodes: 1}",
]


def test_clips_pad_past_the_episode_end_and_caching_changes_nothing(make_dataset):
    root, written = make_dataset(lengths=(20, 15), cameras={"front": (32, 48)})
    reader = DatasetReader(root)
    cached = ClipDataset(reader, "front", [0, 1], [16, 24], num_frames=13)
    streamed = ClipDataset(reader, "front", [0, 1], [16, 24], num_frames=13, cache=False)
    assert len(cached) == 35
    item = cached[20 + 5]  # episode 1, frame 5: frames 5..17 of a 15-frame episode
    assert item["video"].shape == (13, 3, 16, 24) and item["video"].dtype == torch.uint8
    assert item["video_is_pad"].tolist() == [False] * 10 + [True] * 3
    assert torch.equal(item["video"][-1], item["video"][9])  # padded with the last frame
    assert item["instruction"] == "stack the cans" and (item["episode_index"], item["frame_index"]) == (1, 5)
    for i in (0, 7, 25, 34):
        assert torch.equal(cached[i]["video"], streamed[i]["video"])
        assert torch.equal(cached[i]["previous"], streamed[i]["previous"])
    # the frame before the clip: frame 4 of episode 1, and frame 0 itself at an episode's start
    assert torch.equal(item["previous"], cached[20 + 4]["video"][0])
    assert torch.equal(cached[20]["previous"], cached[20]["video"][0])
    # whole clips only, spread over both episodes
    starts = clip_starts(cached, 5)
    assert starts[0] == (0, 0) and starts[-1] == (1, 2) and all(t + 13 <= (20, 15)[ep] for ep, t in starts)


def test_train_wm_writes_a_model_previews_and_an_evaluation(make_dataset, tmp_path):
    root, written = make_dataset(lengths=(20, 22, 18), cameras={"front": (32, 48), "wrist": (16, 16)})
    out = tmp_path / "run"
    result = runner.invoke(app, ["train-wm", "stack_cans", "--data", str(root), "--out", str(out), *SMALL])
    assert result.exit_code == 0, result.output
    assert "frames 7-13" in result.output and "copy current" in result.output

    wm = WorldModel.from_pretrained(out / "model")
    assert wm.config.resolution == [32, 32]
    assert sorted(p.name for p in (out / "previews").iterdir()) == ["step_3.mp4", "step_6.mp4"]
    with av.open(str(out / "previews" / "step_6.mp4")) as video:
        frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
    assert len(frames) == 13 and frames[0].shape == (128, 256, 3)  # one held-out clip: real | predicted, 4x

    report = json.loads((out / "evaluation.json").read_text())
    assert report["camera"] == "front" and report["held_out_episodes"] == [2]
    assert len(report["model_psnr"]) == len(report["copy_psnr"]) == 12 and report["clips"] == 6
    # the baseline, recomputed from the frames as written: copy frame t to frames t+1..t+12
    frames = torch.from_numpy(np.stack(written[2][2]["front"])).permute(0, 3, 1, 2).float()
    frames = torch.nn.functional.interpolate(frames, size=(32, 32), mode="area") / 255.0
    starts = np.linspace(0, 18 - 13, num=6).round().astype(int)
    copy = torch.stack([psnr(frames[t : t + 1].expand(12, -1, -1, -1), frames[t + 1 : t + 13]) for t in starts])
    np.testing.assert_allclose(report["copy_psnr"], copy.mean(0).numpy(), atol=0.5)  # h264 vs the raw frames
    assert report["late_copy_psnr"] == np.mean(report["copy_psnr"][5:])
    assert (out / "recipe.yaml").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_3", "step_6"]


def test_train_wm_resumes_and_refuses_to_overwrite(make_dataset, tmp_path):
    root, _ = make_dataset(lengths=(16, 16), cameras={"front": (32, 32)})
    out = tmp_path / "run"
    args = ["train-wm", "stack_cans", "--data", str(root), "--out", str(out), *SMALL]
    first = runner.invoke(app, [*args, "--max-steps", "3", "--log-with", "tensorboard"])
    assert first.exit_code == 0, first.output
    curves = scalars(out / "logs" / "wm")  # accelerate's tensorboard tracker: the last step, then every 10
    assert [step for step, _ in curves["train/loss"]] == [3] and {"train/lr", "train/samples_per_second"} <= set(curves)
    assert next((out / "logs" / "wm").rglob("hparams.yml")).read_text().count("train_wm.steps: 6") == 1
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resumed at step 3" in resumed.output
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_3", "step_6"]
    assert json.loads((out / "checkpoints" / "step_6" / "step.json").read_text())["step"] == 6  # and its seconds
    recipe = (out / "recipe.yaml").read_text()
    wider = ["--set", "model.overrides.world_model.ffn_dim=64", "--set", "train_wm.steps=9"]  # a model of other sizes
    refused = runner.invoke(app, [*args, *wider, "--resume"])
    error = refused.output.strip().splitlines()[-1]
    assert refused.exit_code == 2 and "other sizes than the recipe builds now" in error
    assert (out / "recipe.yaml").read_text() == recipe  # the run still says what it was trained with


def test_train_wm_stopped_and_resumed_ends_at_the_uninterrupted_weights(make_dataset, tmp_path, deterministic_kernels):
    """--max-steps 2, then --resume to the recipe's 4 steps, equals 4 steps in one go: the same clips at the
    same steps, the same flow-matching noise, the cosine schedule over 4 steps in both, the EMA restored; the
    preview after step 2 (which the stopped run skips) draws nothing from the training's RNG."""
    root, _ = make_dataset(lengths=(16, 16), cameras={"front": (32, 32)})
    quick = ["train_wm.ema_decay=0.9", "train_wm.steps=4", "train_wm.checkpoint_every=2", "train_wm.preview_every=2"]
    quick.append("model.overrides.world_model.denoising_steps=1")  # previews and evaluation: not what is compared
    args = ["train-wm", "stack_cans", "--data", str(root), *SMALL, *(a for q in quick for a in ("--set", q))]
    expected, got = stopped_and_resumed(partial(runner.invoke, app), args, tmp_path)
    ema = [(v, expected[f"checkpoint.{k[6:]}"]) for k, v in expected.items() if k.startswith("model.transformer.")]
    assert ema and any(not torch.equal(a, b) for a, b in ema)  # model/ holds the EMA, not the trained weights
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []


def test_train_wm_user_errors_are_one_line(make_dataset, tmp_path):
    root, _ = make_dataset(lengths=(16,), cameras={"front": (32, 32)})
    cases = [
        (["--data", str(tmp_path / "missing")], "not a dataset"),
        (["--data", str(root)], "at least 2"),
        (["--data", str(root), "--max-steps", "0"], "--max-steps"),
        (["--data", str(root), "--log-with", "all"], "name the trackers"),
        (["--data", str(root), "--log-with", "tensorbored"], "no such tracker"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, ["train-wm", "stack_cans", "--out", str(tmp_path / "r"), *extra])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_dual_arm_recipes_train_on_the_global_camera():
    assert world_model_camera(load_recipe("flowers")) == load_recipe("flowers").camera("global").name
    assert world_model_camera(load_recipe("stack_cans")) == "front"


def test_the_shipped_fsdp_config_loads_and_names_real_block_classes():
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file
    from diffusers.models.transformers import transformer_wan
    from transformers.models.umt5 import modeling_umt5

    path = Path(__file__).resolve().parents[1] / "recipes" / "accelerate" / "fsdp.yaml"
    config = load_config_from_file(str(path))
    assert config.distributed_type == "FSDP" and config.mixed_precision == "bf16"
    classes = config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")
    assert classes == ["WanTransformerBlock", "UMT5Block"]
    assert hasattr(transformer_wan, classes[0]) and hasattr(modeling_umt5, classes[1])


def test_train_wm_runs_unchanged_as_two_ddp_processes(make_dataset, tmp_path):
    """What `accelerate launch --num_processes 2` does on GPUs, here on the CPU over gloo (loopback only)."""
    import os
    import subprocess
    import sys

    root, _ = make_dataset(lengths=(16, 16, 16), cameras={"front": (32, 32)})
    out = tmp_path / "run"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "harmowam_cli.main", "train-wm", "stack_cans", "--data", str(root), "--out", str(out), *SMALL]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    step = out / "checkpoints" / "step_6"
    assert (step / "random_states_0.pkl").exists() and (step / "random_states_1.pkl").exists()  # two ranks
    assert result.stdout.count("held-out PSNR") == 1  # only the main process reports
    assert json.loads((out / "evaluation.json").read_text())["steps"] == 6
    WorldModel.from_pretrained(out / "model")


def test_the_moving_pixel_score_reads_only_what_changes():
    from harmowam_core.training.reports import moving_errors

    real = torch.zeros(1, 3, 3, 8, 8)
    real[:, 1:, :, 2:4, 2:4] = 1.0  # a 2 x 2 square appears in both future frames; the rest stays black
    model, copy, count = moving_errors(real.clone(), real)  # a perfect prediction
    assert model.tolist() == [0.0, 0.0] and count.tolist() == [12.0, 12.0]  # 4 pixels x 3 channels per frame
    assert copy.tolist() == [12.0, 12.0]  # copying the current frame misses all of them by 1
    wrong = real.clone()
    wrong[:, :, :, 6, 6] = 0.5  # an error on a still pixel does not count
    assert moving_errors(wrong, real)[0].tolist() == [0.0, 0.0]
