"""Stage 2 end to end: `harmowam train-experts` on a small labelled dataset and a saved tiny world model: the
world-model cache is filled once and reused, the experts save and reload, resume works, the report is written."""

from __future__ import annotations

import dataclasses
import json
import shutil
from functools import partial

import numpy as np
import pytest
import torch
from conftest import stopped_and_resumed
from tensorboard_events import scalars
from typer.testing import CliRunner

from harmowam_cli.main import app
from harmowam_core.action_space import state_change
from harmowam_core.config import load_recipe
from harmowam_core.data.labels import LabelSettings, label_dataset
from harmowam_core.data.reader import DatasetReader
from harmowam_core.data.windows import ClipDataset, resize_frames
from harmowam_core.errors import HarmoWAMError
from harmowam_core.models.experts import Experts, ExpertsConfig, Normalizer, robust_scale
from harmowam_core.models.presets import GateModelConfig, PredictiveExpertConfig, ReactiveExpertConfig, WorldModelConfig
from harmowam_core.models.world_model import WorldModel
from harmowam_core.training import experts as stage2
from harmowam_core.training import loop as training_loop
from harmowam_core.training.cache import WorldModelCache

runner = CliRunner()
CAMERAS = {"front": (32, 32), "top": (16, 16), "wrist": (16, 16)}
SMALL = [
    "--set",
    "model.overrides={world_model: {resolution: [32, 32]}, predictive_expert: {image_size: 32}, "
    "reactive_expert: {image_size: 32}}",
    "--set",
    "train_experts={steps: 4, batch_size: 4, warmup_steps: 1, checkpoint_every: 2, held_out_episodes: 1,"
    " window_stride: 1}",
]


@pytest.fixture
def stage2_inputs(make_dataset, tmp_path):
    """A labelled 3-episode dataset and a saved (untrained) tiny world model at 32 px."""
    root, _ = make_dataset(lengths=(18, 16, 15), cameras=CAMERAS)
    label_dataset(root, LabelSettings(window=2))
    wm_dir = tmp_path / "wm"
    torch.manual_seed(0)
    WorldModel.from_config(WorldModelConfig(resolution=[32, 32])).save_pretrained(wm_dir)
    return root, wm_dir


def _count_predictions(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = WorldModel.predict

    def counting(self, current, *args, **kwargs):
        calls.append(len(current))
        return real(self, current, *args, **kwargs)

    monkeypatch.setattr(WorldModel, "predict", counting)
    return calls


def test_train_experts_caches_the_world_model_and_reports(stage2_inputs, tmp_path, monkeypatch):
    root, wm_dir = stage2_inputs
    out = tmp_path / "experts"
    calls = _count_predictions(monkeypatch)
    args = ["train-experts", "stack_cans", "--data", str(root), "--wm", str(wm_dir), "--out", str(out), *SMALL]
    first = runner.invoke(app, [*args, "--max-steps", "2", "--log-with", "tensorboard"])
    assert first.exit_code == 0, first.output
    curves = scalars(out / "logs" / "experts")  # every loss term and the learning rate, at the last step
    assert {"train/loss", "train/pred", "train/react", "train/gate", "train/lr"} <= set(curves)
    assert [step for step, _ in curves["train/gate"]] == [2]
    assert sum(calls) == 18 + 16 + 15  # every window imagined exactly once (train and held-out)

    # resuming continues at step 2 and imagines nothing: the cache on disk is reused
    calls.clear()
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert calls == [] and "resumed at step 2" in result.output
    # a resumed run keeps what its experts learn and read: other targets are one line, and nothing is rewritten
    saved = (out / "recipe.yaml").read_text()
    other = runner.invoke(app, [*args, "--resume", "--set", "model.overrides.action_targets=delta"])
    refused = "trained with model.overrides.action_targets=absolute and this recipe sets delta"
    assert other.exit_code == 2 and refused in other.output, other.output
    assert len(other.output.strip().splitlines()) == 1 and (out / "recipe.yaml").read_text() == saved
    assert "gate frame accuracy" in result.output and "routed by the gate" in result.output

    report = json.loads((out / "report.json").read_text())
    assert report["episodes"] == [2] and report["frames"] == 15 and report["steps"] == 4
    assert 0.0 <= report["gate_accuracy"] <= 1.0
    assert set(report["errors"]) == {"predictive", "reactive", "routed"}
    assert report["counts"]["transit"] + report["counts"]["interaction"] == 15
    assert report["world_model"] == str(wm_dir.resolve())

    cache_dirs = sorted(p for p in (out / "cache").iterdir())
    assert len(cache_dirs) == 2 and not any(p.name.endswith(".partial") for p in cache_dirs)
    caches = [WorldModelCache(p) for p in cache_dirs]
    held = next(c for c in caches if c.index[0][0] == 2)
    assert held.frames.shape == (15, 12, 3, 32, 32) and held.hidden.dtype.name == "float16"
    # the cache holds what the world model imagines for those windows (same seed, one batch)
    wm = WorldModel.from_pretrained(wm_dir)
    clips = ClipDataset(DatasetReader(root), "front", [2], [32, 32], 13)
    current = torch.stack([clips.clip(2, t)[0][0] for t in range(15)])
    previous = torch.stack([clips.previous(2, t) for t in range(15)])  # each window's frame before
    imagined = wm.predict(
        current, ["stack the cans"] * 15, generator=torch.Generator().manual_seed(0), previous=previous
    )
    expected = (imagined.frames[:, 1:] * 255).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(torch.from_numpy(np.array(held.frames)), expected)
    torch.testing.assert_close(torch.from_numpy(np.array(held.hidden)).float(), imagined.hidden, atol=1e-2, rtol=1e-2)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_2", "step_4"]

    experts = Experts.from_pretrained(out / "model")
    assert experts.config.action_dim == 7 and experts.config.num_cameras == 3 and experts.config.use_wm_latents
    assert (out / stage2.INPUTS_FILE).is_file()  # what the experts read, for the user to look at


def test_train_experts_stopped_and_resumed_ends_at_the_uninterrupted_weights(
    stage2_inputs, tmp_path, deterministic_kernels
):
    """--max-steps 2, then --resume to the recipe's 3 steps, equals 3 steps in one go: the same windows at the
    same steps, the same augmentation and noise, and the EMA (on by default in stage 2) restored."""
    root, wm_dir = stage2_inputs
    quick = ["--set", "train_experts.steps=3", "--set", "train_experts.checkpoint_every=1"]
    args = ["train-experts", "stack_cans", "--data", str(root), "--wm", str(wm_dir), *SMALL, *quick]

    def share_the_cache():  # what the world model imagines
        shutil.copytree(tmp_path / "whole" / "cache", tmp_path / "parts" / "cache")

    expected, got = stopped_and_resumed(partial(runner.invoke, app), args, tmp_path, share_the_cache)
    ema = [(v, expected[f"checkpoint.{k.split('.', 2)[2]}"]) for k, v in expected.items() if k.startswith("model.")]
    assert ema and any(not torch.equal(a, b) for a, b in ema)  # model/ holds the EMA, not the trained weights
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []


def test_snapshots_keep_the_trained_weights_and_export_chooses_one(stage2_inputs, tmp_path):
    """`train_experts.snapshot_every`: the trained (EMA) weights of every N-th step but the last in snapshots/;
    `harmowam export --snapshot N` bundles those; a step without a snapshot is one line naming the ones there."""
    root, wm_dir = stage2_inputs
    out = tmp_path / "experts"
    args = ["train-experts", "stack_cans", "--data", str(root), "--wm", str(wm_dir), "--out", str(out), *SMALL]
    two_steps = ["--set", "model.overrides.predictive_expert.obs_steps=2"]  # the state's change read as well
    result = runner.invoke(app, [*args, "--set", "train_experts.snapshot_every=2", *two_steps])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["step_2"]  # step 4 is model/
    snap, final = Experts.from_pretrained(out / "snapshots" / "step_2"), Experts.from_pretrained(out / "model")
    assert snap.config == final.config and final.config.predictive.obs_steps == 2
    reader = DatasetReader(root)  # scaled by the training episodes' (0 and 1) changes per control step
    states = [reader.state[reader.episode_slice(e)] for e in (0, 1)]
    changes = np.concatenate([state_change(s, np.concatenate([s[:1], s[:-1]])) for s in states])  # first: 0
    np.testing.assert_allclose(final.normalizer.state_change_std, robust_scale(changes), rtol=1e-5)
    assert any(
        not torch.equal(a, b) for a, b in zip(snap.state_dict().values(), final.state_dict().values(), strict=True)
    )

    exported = runner.invoke(
        app, ["export", str(out), "--bundles", str(tmp_path / "b"), "--name", "s2", "--snapshot", "2"]
    )
    assert exported.exit_code == 0, exported.output
    bundle = Experts.from_pretrained(tmp_path / "b" / "s2" / "experts")
    assert all(torch.equal(a, b) for a, b in zip(bundle.state_dict().values(), snap.state_dict().values(), strict=True))
    assert json.loads((tmp_path / "b" / "s2" / "bundle.json").read_text())["sources"]["snapshot"] == 2
    missing = runner.invoke(app, ["export", str(out), "--bundles", str(tmp_path / "b"), "--snapshot", "3"])
    assert missing.exit_code == 2 and "no snapshot of step 3; the run has 2" in missing.output
    assert len(missing.output.strip().splitlines()) == 1

    # a run stopped after a snapshot (no model/, no report.json yet) still exports that snapshot
    shutil.rmtree(out / "model")
    (out / "report.json").unlink()
    stopped = runner.invoke(
        app, ["export", str(out), "--bundles", str(tmp_path / "b"), "--name", "s", "--snapshot", "2"]
    )
    assert stopped.exit_code == 0, stopped.output
    assert json.loads((tmp_path / "b" / "s" / "bundle.json").read_text())["sources"]["world_model"] == str(
        wm_dir.resolve()
    )


def test_windows_carry_real_or_imagined_frames_and_per_frame_tokens(stage2_inputs, tmp_path):
    root, wm_dir = stage2_inputs
    recipe = load_recipe("stack_cans", [SMALL[1], SMALL[3]])
    trainer = stage2.ExpertsTrainer(recipe, root, wm_dir, tmp_path / "e")
    wm = WorldModel.from_pretrained(wm_dir)
    windows = trainer._windows(wm, [0], None)
    item = windows[3]
    assert item["images"].shape == (3, 3, 32, 32) and item["images"].dtype == torch.uint8
    assert item["frames"].shape == (12, 3, 32, 32) and item["action"].shape == (12, 7)
    n = (32 // 4 // 2) ** 2  # pixel codec 4x, transformer patch 2x2: tokens per latent frame
    assert item["wm_hidden"].shape == (13 * n, 64) and item["wm_frame_tokens"].shape == (12, n, 64)
    # frame k of the future is read with the tokens of latent frame k + 1
    assert torch.equal(item["wm_frame_tokens"][0], item["wm_hidden"][n : 2 * n])
    assert item["action_is_pad"].sum() == 0 and windows[17]["action_is_pad"].sum() == 11
    state = windows.reader.state  # episode 0 starts the dataset: its frame t is row t
    np.testing.assert_allclose(item["state_change"].numpy(), state_change(state[3], state[2]), atol=1e-6)
    assert not windows[0]["state_change"].any()  # an episode's first frame: nothing moved yet

    recipe.train_experts.reactive_on_real_frames = True
    real = stage2.ExpertsTrainer(recipe, root, wm_dir, tmp_path / "e")._windows(wm, [0], None)
    assert torch.equal(real[3]["frames"], windows.clips.clip(0, 3)[0][1:13])
    assert torch.equal(real[3]["wm_hidden"], item["wm_hidden"])  # same cache: only the frames differ

    recipe.train_experts.window_stride = 4  # the default: a window at every 4th frame, its own cache
    strided = stage2.ExpertsTrainer(recipe, root, wm_dir, tmp_path / "e")._windows(wm, [0], None)
    assert strided.index == [(0, 0), (0, 4), (0, 8), (0, 12), (0, 16)]
    assert torch.equal(strided[1]["action"], real[4]["action"])


def test_the_images_are_cropped_as_the_recipe_says_and_the_run_shows_what_the_experts_read(stage2_inputs, tmp_path):
    root, wm_dir = stage2_inputs
    crops = "model.overrides.predictive_expert.crops={top: [0.0, 0.5, 0.5, 0.5]}"
    recipe = load_recipe("stack_cans", [SMALL[1], SMALL[3], crops])
    wm = WorldModel.from_pretrained(wm_dir)
    windows = stage2.ExpertsTrainer(recipe, root, wm_dir, tmp_path / "e")._windows(wm, [0], None)
    whole = load_recipe("stack_cans", [SMALL[1], SMALL[3]])
    plain = stage2.ExpertsTrainer(whole, root, wm_dir, tmp_path / "e")._windows(wm, [0], None)
    top = windows.reader.frames(0, "top", np.array([3]))  # (1, 16, 16, 3): its upper right quarter, at 32 px
    assert torch.equal(windows[3]["images"][1], resize_frames(top[:, :8, 8:], [32, 32])[0])
    assert torch.equal(windows[3]["images"][[0, 2]], plain[3]["images"][[0, 2]])  # the others read whole

    # a crop must name a camera the dataset has (here the dataset's own names: front, top, wrist)
    renamed = "cameras=[{name: front, role: front, height: 32, width: 32}, {name: overhead, role: top, height: 16, "
    renamed += "width: 16}, {name: wrist, role: wrist, height: 16, width: 16}]"
    foreign = load_recipe("stack_cans", [SMALL[1], SMALL[3], renamed, crops.replace("{top", "{overhead")])
    with pytest.raises(HarmoWAMError, match="crops names overhead, not a camera of the dataset"):
        stage2.ExpertsTrainer(foreign, root, wm_dir, tmp_path / "f")

    sheet = stage2.save_input_sheet(windows, tmp_path / "inputs.png", rows=2)
    from PIL import Image

    image = np.asarray(Image.open(sheet))
    panel, banner = stage2.SHEET_PANEL, image.shape[0] - 2 * stage2.SHEET_PANEL
    assert image.shape[1] == (3 + len(stage2.SHEET_FRAMES)) * panel
    first = Image.fromarray(windows[0]["images"][1].permute(1, 2, 0).numpy()).resize((panel, panel), Image.NEAREST)
    assert np.array_equal(image[banner : banner + panel, panel : 2 * panel], np.asarray(first))  # row 1, the top camera


def _tiny_experts(use_wm_latents=True, seed=0, obs_steps=1, gripper_head=False) -> Experts:
    torch.manual_seed(seed)
    config = ExpertsConfig(
        PredictiveExpertConfig(image_size=32, obs_steps=obs_steps, gripper_head=gripper_head),
        ReactiveExpertConfig(image_size=32),
        GateModelConfig(),
        action_dim=7,
        state_dim=7,
        num_cameras=2,
        wm_width=64,
        wm_latent_frames=10,  # _batch's wm_hidden: 10 latent frames of 4 tokens
        use_wm_latents=use_wm_latents,
    )
    g = torch.Generator().manual_seed(1)
    norm = Normalizer.from_arrays(*(torch.randn(50, 7, generator=g) for _ in range(2)))
    norm.state_change_std = [0.01] * 6 + [0.2]
    return Experts(config, norm)


def test_experts_saved_before_obs_steps_existed_read_the_current_state_only(tmp_path):
    """Files written before `obs_steps` (whose default is now 2) load as the one-observation expert they are."""
    _tiny_experts(obs_steps=1).save_pretrained(tmp_path / "model")
    (meta_file,) = (tmp_path / "model").glob("*.json")
    meta = json.loads(meta_file.read_text())
    del meta["config"]["predictive"]["obs_steps"]
    meta_file.write_text(json.dumps(meta))
    assert Experts.from_pretrained(tmp_path / "model").config.predictive.obs_steps == 1


def _batch(b=3, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randint(0, 255, (b, 2, 3, 32, 32), generator=g, dtype=torch.uint8),
        "state": torch.randn(b, 7, generator=g),
        "state_change": 0.01 * torch.randn(b, 7, generator=g),
        "instruction": ["stack the cans"] * b,
        "action": torch.randn(b, 12, 7, generator=g),
        "action_is_pad": torch.zeros(b, 12, dtype=torch.bool),
        "interaction": torch.tensor([0, 1, -1])[:b],
        "frames": torch.randint(0, 255, (b, 12, 3, 32, 32), generator=g, dtype=torch.uint8),
        "wm_hidden": torch.randn(b, 40, 64, generator=g),
        "wm_frame_tokens": torch.randn(b, 12, 4, 64, generator=g),
    }


def test_experts_save_and_load_give_identical_outputs(tmp_path):
    experts = _tiny_experts()
    with torch.no_grad():  # move every zero-initialised output layer off zero so the comparison means something
        for p in experts.parameters():
            p.add_(0.05 * torch.randn_like(p))
    experts.save_pretrained(tmp_path / "m")
    loaded = Experts.from_pretrained(tmp_path / "m")
    batch = _batch()
    a = experts.eval().act(batch, generator=torch.Generator().manual_seed(3))
    b = loaded.act(batch, generator=torch.Generator().manual_seed(3))
    for key in ("predictive", "reactive", "p_interaction"):
        torch.testing.assert_close(a[key], b[key])
    assert a["predictive"].shape == (3, 12, 7) and a["p_interaction"].shape == (3,)
    assert loaded.normalizer == experts.normalizer


def test_the_latent_ablation_ignores_the_world_model_tokens():
    experts = _tiny_experts(use_wm_latents=False)
    batch = _batch()
    other = dict(batch, wm_hidden=torch.zeros_like(batch["wm_hidden"]), wm_frame_tokens=None)
    g = torch.Generator()
    a = experts(batch, generator=g.manual_seed(0))
    b = experts(other, generator=g.manual_seed(0))
    assert torch.equal(a["loss"], b["loss"])
    with_latents = _tiny_experts(use_wm_latents=True)
    assert with_latents(batch, generator=g.manual_seed(0))["loss"].requires_grad


def test_the_reactive_loss_reads_a_random_subset_of_frames_in_training_only():
    """`reactive_expert.train_frames`: each window's loss reads that many of its 12 frames, drawn per window, in
    order, with their own tokens, actions and pad flags; evaluation and inference read all 12."""
    experts = _tiny_experts()
    batch = _batch()
    frames, actions = batch["frames"], batch["action"]
    pad = torch.arange(12).expand(3, -1) >= 10  # the last two steps padded
    g = torch.Generator().manual_seed(0)
    f, tokens, a, p = experts._reactive_frames(frames, batch["wm_frame_tokens"], actions, pad, g)
    assert f.shape == (3, 4, 3, 32, 32) and tokens.shape == (3, 4, 4, 64) and a.shape == (3, 4, 7) and p.shape == (3, 4)
    for row in range(3):  # the same frame index picked across frames, tokens, actions and pad flags
        picked = [next(k for k in range(12) if torch.equal(frames[row, k], f[row, j])) for j in range(4)]
        assert picked == sorted(set(picked))
        assert torch.equal(a[row], actions[row, picked]) and torch.equal(p[row], pad[row, picked])
        assert torch.equal(tokens[row], batch["wm_frame_tokens"][row, picked])
    again = experts._reactive_frames(frames, batch["wm_frame_tokens"], actions, pad, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], f)  # drawn from the loss's generator: reproducible
    experts.eval()
    assert experts._reactive_frames(frames, None, actions, pad, g)[0] is frames
    experts.train()
    experts.reactive.config.train_frames = None
    assert experts._reactive_frames(frames, None, actions, pad, g)[0] is frames


def test_with_two_observation_steps_the_predictive_expert_reads_the_states_change():
    """obs_steps 2 (diffusion policy's n_obs_steps): the state's change since the previous control step, scaled
    by its training scale, joins the predictive expert's condition; with 1 it is ignored."""
    batch = _batch()
    descending = dict(batch, state_change=batch["state_change"].clone())
    descending["state_change"][:, 2] = -0.01  # the same states, moving down instead
    for obs_steps, reads in ((2, True), (1, False)):
        experts = _tiny_experts(obs_steps=obs_steps)
        with torch.no_grad():  # off the zero-initialised output layers, so that the condition shows
            for p in experts.parameters():
                p.add_(0.05 * torch.randn_like(p))
        g = torch.Generator()
        a = experts.eval().act(batch, generator=g.manual_seed(0))["predictive"]
        b = experts.act(descending, generator=g.manual_seed(0))["predictive"]
        assert (not torch.equal(a, b)) is reads
    assert experts.predictive.state_embed[0].in_features == 7
    assert _tiny_experts(obs_steps=2).predictive.state_embed[0].in_features == 14
    experts = _tiny_experts(obs_steps=2)
    experts.normalizer.state_change_std = None  # statistics saved without it
    with pytest.raises(ValueError, match="state_change_std"):
        experts(batch)


def test_the_stage2_objective_weights_the_three_losses():
    experts = _tiny_experts()
    experts.config.lambda_pred, experts.config.lambda_react = 2.0, 0.5
    out = experts(_batch(), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["loss"], 2.0 * out["pred"] + 0.5 * out["react"] + out["gate"])


def test_train_experts_user_errors_are_one_line(make_dataset, stage2_inputs, tmp_path, monkeypatch):
    root, wm_dir = stage2_inputs
    monkeypatch.setattr(training_loop, "available_trackers", lambda: {"tensorboard"})  # wandb never starts
    unlabelled, _ = make_dataset(lengths=(16, 16), cameras=CAMERAS, root=tmp_path / "raw")
    cases = [
        (["--data", str(unlabelled), "--wm", str(wm_dir)], "harmowam label"),
        (["--data", str(root), "--wm", str(tmp_path / "nowm")], "train-wm"),
        (["--data", str(root), "--wm", str(wm_dir), "--max-steps", "0"], "--max-steps"),
        (["--data", str(tmp_path / "missing"), "--wm", str(wm_dir)], "not a dataset"),
        (["--data", str(root), "--wm", str(wm_dir), "--log-with", "wandb"], "pip install wandb"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, ["train-experts", "stack_cans", "--out", str(tmp_path / "r"), *extra])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_a_gate_reading_the_world_model_needs_its_latent_frames():
    config = _tiny_experts().config
    with pytest.raises(ValueError, match="wm_latent_frames"):
        Experts(dataclasses.replace(config, wm_latent_frames=0), _tiny_experts().normalizer)
    ablation = Experts(
        dataclasses.replace(config, wm_latent_frames=0, use_wm_latents=False), _tiny_experts().normalizer
    )
    assert ablation.gate.world_model is None


def test_the_normalizer_records_the_demonstrated_action_range():
    actions = torch.tensor([[0.0, -2.0], [1.0, 2.0], [2.0, 0.0]])
    norm = Normalizer.from_arrays(actions, torch.zeros(3, 1))
    assert norm.action_min == [0.0, -2.0] and norm.action_max == [2.0, 2.0]
    low, high = norm.action_bounds(actions)
    torch.testing.assert_close(low, norm.normalize_action(torch.tensor([0.0, -2.0])))
    torch.testing.assert_close(high, norm.normalize_action(torch.tensor([2.0, 2.0])))
    assert Normalizer([0.0], [1.0], [0.0], [1.0]).action_bounds(actions) is None  # saved without a range


def _near_constant_roll(frames: int = 2034) -> torch.Tensor:
    """Actions (frames, 7): Gaussian translations and yaw, a binary gripper, and a roll that is 0 on every frame
    but one, where it is 0.01 rad (the case of issue 22)."""
    g = torch.Generator().manual_seed(0)
    actions = torch.randn(frames, 7, generator=g, dtype=torch.float64) * 0.01
    actions[:, 3] = 0.0
    actions[frames // 2, 3] = 0.01
    actions[:, 6] = (torch.rand(frames, generator=g) < 0.3).double()
    return actions


def test_a_near_constant_roll_standardises_bounded_and_is_clamped_without_a_one_sided_bias():
    """Standardised by its std alone, the odd roll frame lies sqrt(N - 1) = 45 std out and the clamp window is
    [-0.02, +45] std: a zero-mean sampler error came out as a positive roll every time. With the range floor
    and the clamp margin the roll stays within 10 scales and the clamped error keeps its sign balance."""
    actions = _near_constant_roll()
    norm = Normalizer.from_arrays(actions, torch.zeros(len(actions), 7))
    z = norm.normalize_action(actions)
    assert z[:, 3].abs().max() <= 10.0 + 1e-4  # the range / 10 floor: 0.01 rad -> 10 scales, not 45
    assert norm.action_std[3] == pytest.approx(0.001)
    assert norm.action_std[0] == pytest.approx(float(actions[:, 0].std(unbiased=False)))  # ordinary: plain std
    low, high = norm.chunk_bounds(torch.zeros(1, 7), 12, absolute=False)  # the window Experts.act clamps into
    assert low[3] <= -1.0 + 1e-5 and high[3] >= 9.99  # at least one scale either side of the mean
    assert norm.denormalize_action(high)[3] == pytest.approx(0.01, abs=1e-7)  # the demonstrated top is kept
    # a zero-mean sampler output (standard normal, in standardised units), clamped and converted as act() does
    sampled = torch.randn(20000, 7, generator=torch.Generator().manual_seed(1))
    executed = norm.denormalize_action(sampled.clamp(low, high))[:, 3]
    negative = float((executed < 0).double().mean())
    assert 0.45 < negative < 0.55  # before: 0.0, every executed roll was >= 0
    bias = float(executed.mean()) - norm.action_mean[3]
    assert abs(bias) < 0.1 * norm.action_std[3]  # before: +0.4 std, a drift that a delta action integrates


def test_a_second_gripper_that_never_moves_stays_pinned():
    """A dual-arm task whose right gripper is 0 on every frame (action and state): it passes through
    unscaled and the sampler's clamp pins it to 0, whatever the sampler outputs."""
    g = torch.Generator().manual_seed(0)
    actions = torch.randn(500, 14, generator=g) * 0.01
    actions[:, 6] = (torch.rand(500, generator=g) < 0.5).float()
    actions[:, 13] = 0.0
    states = torch.randn(500, 14, generator=g) * 0.1
    states[:, 13] = 0.0
    norm = Normalizer.from_arrays(actions, states)
    assert norm.action_std[13] == 1.0 and norm.state_std[13] == 1.0
    assert torch.equal(norm.normalize_action(actions)[:, 13], torch.zeros(500))
    assert torch.equal(norm.normalize_state(states)[:, 13], torch.zeros(500))
    low, high = norm.action_bounds(actions)
    assert float(low[13]) == float(high[13]) == 0.0  # no margin on a constant: the window is its value
    sampled = 5.0 * torch.randn(1000, 14, generator=g)
    assert torch.equal(norm.denormalize_action(sampled.clamp(low, high))[:, 13], torch.zeros(1000))


def test_a_normalizer_saved_before_the_range_floor_keeps_its_scale(tmp_path):
    """An experts directory written before: its normaliser has the bare std (2.2e-4 for the near-constant roll)
    and no delta range. It loads with the scale its weights were trained on; only the clamp window widens."""
    actions = _near_constant_roll()
    bare = actions.std(0, unbiased=False)
    saved = {
        "action_mean": actions.mean(0).tolist(),
        "action_std": torch.where(bare < 1e-4, torch.ones_like(bare), bare).tolist(),
        "state_mean": [0.0] * 7,
        "state_std": [1.0] * 7,
        "action_min": actions.min(0).values.tolist(),
        "action_max": actions.max(0).values.tolist(),
    }
    (tmp_path / "normalizer.json").write_text(json.dumps(saved))
    norm = Normalizer(**json.loads((tmp_path / "normalizer.json").read_text()))
    assert norm.action_std[3] == pytest.approx(2.216e-4, rel=1e-3)
    assert float(norm.normalize_action(actions).max(0).values[3]) == pytest.approx(45.08, abs=0.01)
    low, high = norm.action_bounds(actions)
    assert float(low[3]) == pytest.approx(-1.0, abs=1e-4) and float(high[3]) == pytest.approx(45.08, abs=0.01)


def test_the_gripper_head_joins_the_objective_and_its_probability_is_the_executed_command(tmp_path):
    """gripper_head: binary cross-entropy on the demonstrated command (closed above 0.5) adds to the objective
    (weighted as the predictive loss), and its p(closed) replaces the predictive chunk's gripper numbers."""
    experts = _tiny_experts(gripper_head=True)
    experts.config.lambda_pred = 2.0
    batch = _batch()
    out = experts(batch, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["loss"], 2.0 * (out["pred"] + out["gripper"]) + out["react"] + out["gate"])
    with torch.no_grad():  # a head sure of a closed gripper everywhere: p = sigmoid(3) = 0.953
        experts.predictive.gripper_out.weight.zero_()
        experts.predictive.gripper_out.bias.fill_(3.0)
    experts.eval()
    acts = experts.act(batch, generator=torch.Generator().manual_seed(1))
    expected = experts.predictive.gripper_probability(*_predictive_condition(experts, batch))
    torch.testing.assert_close(acts["predictive"][..., 6:7], expected)
    torch.testing.assert_close(acts["predictive"][..., 6], torch.full((3, 12), 0.9526), atol=1e-4, rtol=0)
    experts.save_pretrained(tmp_path / "m")  # the head is saved and loaded with the rest
    loaded = Experts.from_pretrained(tmp_path / "m")
    again = loaded.act(batch, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(acts["predictive"], again["predictive"])
    assert not _tiny_experts().predictive.gripper_blocks  # off by default


def _predictive_condition(experts: Experts, batch: dict):
    _, _, _, cond, state, _, keypoints = experts._inputs(batch)
    return cond, state, keypoints


def test_the_gripper_head_learns_when_to_close_from_the_state():
    """Ladder (b) in small: the same images, two states; the demonstrated command closes in one of them. The
    head separates them within a few dozen steps; the denoised numbers are left to the diffusion loss."""
    experts = _tiny_experts(gripper_head=True)
    batch = _batch(b=2)
    batch["interaction"] = torch.tensor([0, 1])
    batch["images"] = batch["images"][:1].expand(2, -1, -1, -1, -1).clone()
    batch["action"][0, :, 6], batch["action"][1, :, 6] = 0.0, 1.0  # open above the can, closed at it
    params = [p for n, p in experts.named_parameters() if n.startswith("predictive.")]
    opt = torch.optim.AdamW(params, lr=3e-3)
    for _ in range(60):
        loss = experts.predictive.gripper_loss(*_labelled(experts, batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
    p = experts.eval().predictive.gripper_probability(*_predictive_condition(experts, batch))
    assert bool((p[0] < 0.2).all()) and bool((p[1] > 0.8).all()), p[..., 0]


def _labelled(experts: Experts, batch: dict):
    cond, state, keypoints = _predictive_condition(experts, batch)
    closed = batch["action"][..., experts.predictive.gripper_index] > 0.5
    return cond, state, closed, batch["action_is_pad"], keypoints


def test_speed_augment_scales_the_state_change_in_training_only():
    """speed_augment [low, high]: in training each window's state change is scaled by one factor drawn from the
    range (the same motion, slower or faster); in evaluation and at run time the change is read as it is."""
    experts = _tiny_experts(obs_steps=2)
    batch = _batch()
    plain = _predictive_condition(experts.eval(), batch)[1]
    experts.predictive.config.speed_augment = [0.5, 0.5]
    experts.train()
    halved = _predictive_condition(experts, batch)[1]
    torch.testing.assert_close(halved[:, :7], plain[:, :7])  # the state itself is untouched
    torch.testing.assert_close(halved[:, 7:], 0.5 * plain[:, 7:])
    experts.predictive.config.speed_augment = [0.2, 1.2]
    _, _, _, _, state, _, _ = experts._inputs(batch, generator=torch.Generator().manual_seed(0))
    factors = state[:, 7:] / plain[:, 7:]
    assert bool(((factors >= 0.2 - 1e-5) & (factors <= 1.2 + 1e-5)).all())
    torch.testing.assert_close(factors, factors[:, :1].expand_as(factors))  # one factor per window
    assert len(set(factors[:, 0].tolist())) == 3
    torch.testing.assert_close(_predictive_condition(experts.eval(), batch)[1], plain)


def test_the_predictive_expert_reads_rotations_clamped_into_the_demonstrated_range():
    """A roll or pitch beyond anything demonstrated (the orientation drifts under learned rotation deltas) reads
    as the nearest demonstrated one; positions (position OOD) and the gripper pass as they are, for each arm."""
    g = torch.Generator().manual_seed(0)
    states = torch.randn(50, 14, generator=g) * 0.01
    norm = Normalizer.from_arrays(torch.randn(50, 14, generator=g), states)
    assert norm.state_min == states.double().min(0).values.tolist()
    far = torch.full((2, 14), 5.0)  # far beyond every number's range
    far[1] = -5.0
    z = norm.normalize_state(far)
    bounded = norm.bound_rotation(z)
    rotation = torch.tensor([k % 7 in (3, 4, 5) for k in range(14)])
    torch.testing.assert_close(bounded[:, ~rotation], z[:, ~rotation])
    high = norm.normalize_state(torch.tensor(norm.state_max).float())
    low = norm.normalize_state(torch.tensor(norm.state_min).float())
    torch.testing.assert_close(bounded[0, rotation], high[rotation])
    torch.testing.assert_close(bounded[1, rotation], low[rotation])
    inside = norm.normalize_state(states[:5])
    torch.testing.assert_close(norm.bound_rotation(inside), inside)  # training states are never changed
    norm.state_min = norm.state_max = None  # statistics saved before the range was kept: read as they are
    torch.testing.assert_close(norm.bound_rotation(z), z)

    experts = _tiny_experts()  # and the predictive expert's input is the bounded state
    batch = _batch()
    experts.normalizer.state_min, experts.normalizer.state_max = [-1.0] * 7, [1.0] * 7
    rolled, at_edge = dict(batch, state=batch["state"].clone()), dict(batch, state=batch["state"].clone())
    rolled["state"][:, 3], at_edge["state"][:, 3] = 9.0, 1.0
    experts.eval()
    torch.testing.assert_close(_predictive_condition(experts, rolled)[1], _predictive_condition(experts, at_edge)[1])
