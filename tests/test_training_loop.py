"""The shared accelerate training loop: it trains, checkpoints, resumes with the optimiser state, and EMA."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard_events import scalars
from torch import nn
from torch.utils.data import TensorDataset

from harmowam_core.config import TrainSpec
from harmowam_core.errors import HarmoWAMError
from harmowam_core.training import loop as training_loop
from harmowam_core.training.loop import TrainLoop, checkpoints, parse_log_with, tracker_config


def regression(n: int = 64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.3
    return TensorDataset(x, y)


def mse(model, batch):
    x, y = batch
    return {"loss": ((model(x).squeeze(-1) - y) ** 2).mean()}


def spec(**changes) -> TrainSpec:
    base = TrainSpec(steps=60, batch_size=16, learning_rate=5e-2, warmup_steps=1, checkpoint_every=20)
    return dataclasses.replace(base, **changes)


def test_trains_and_keeps_the_last_checkpoints(tmp_path):
    torch.manual_seed(0)
    logs = []
    loop = TrainLoop(spec(), tmp_path, nn.Linear(4, 1), mse, regression())
    loop.run(on_log=logs.append)
    assert [log.step for log in logs] == list(range(1, 61))
    assert logs[-1].losses["loss"] < logs[0].losses["loss"] / 10
    assert [p.name for p in checkpoints(tmp_path)] == ["step_40", "step_60"]


def test_resume_continues_at_the_saved_step_with_the_optimiser_state(tmp_path):
    torch.manual_seed(0)
    first = TrainLoop(spec(steps=40), tmp_path, nn.Linear(4, 1), mse, regression())
    first.run()
    saved_weights = {k: v.clone() for k, v in first.trained_model().state_dict().items()}
    saved_moments = first.optimizer.state_dict()["state"][0]["exp_avg"].clone()

    torch.manual_seed(123)  # a fresh model: everything must come from the checkpoint
    second = TrainLoop(spec(steps=60), tmp_path, nn.Linear(4, 1), mse, regression())
    assert second.resume() == 40
    for k, v in second.trained_model().state_dict().items():
        torch.testing.assert_close(v, saved_weights[k])
    torch.testing.assert_close(second.optimizer.state_dict()["state"][0]["exp_avg"], saved_moments)
    logs = []
    second.run(on_log=logs.append)
    assert logs[0].step == 41 and logs[-1].step == 60


class Killed(BaseException):
    """Raised where a SIGKILL lands: nothing after it runs, no `except Exception` catches it."""


def test_a_run_killed_while_checkpointing_leaves_whole_checkpoints_and_resumes(tmp_path, monkeypatch):
    """Killed while writing step.json, then while deleting the oldest checkpoint: every `step_N` left is whole
    (benchmarks/chaos.py found a half-written step.json that --resume could not read)."""
    torch.manual_seed(0)
    TrainLoop(spec(steps=40), tmp_path, nn.Linear(4, 1), mse, regression()).run()  # step_20, step_40
    real_write_text = Path.write_text

    def write_half(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise Killed

    killed = TrainLoop(spec(steps=60), tmp_path, nn.Linear(4, 1), mse, regression())
    monkeypatch.setattr(Path, "write_text", write_half)
    with pytest.raises(Killed):
        killed.run(resume=True)  # at step 60
    monkeypatch.setattr(Path, "write_text", real_write_text)
    assert [p.name for p in checkpoints(tmp_path)] == ["step_20", "step_40"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_20", "step_40"]

    real_rmtree = training_loop.shutil.rmtree

    def rmtree_half(path, ignore_errors=False):
        if Path(path).name.endswith(".old") and Path(path).exists():  # an old checkpoint, half deleted
            sorted(Path(path).iterdir())[-1].unlink()
            raise Killed
        real_rmtree(path, ignore_errors=ignore_errors)

    again = TrainLoop(spec(steps=60), tmp_path, nn.Linear(4, 1), mse, regression())
    monkeypatch.setattr(training_loop.shutil, "rmtree", rmtree_half)
    with pytest.raises(Killed):
        again.run(resume=True)  # saves step_60, then removes step_20
    monkeypatch.setattr(training_loop.shutil, "rmtree", real_rmtree)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_40", "step_60"]

    last = TrainLoop(spec(steps=80), tmp_path, nn.Linear(4, 1), mse, regression())
    assert last.resume() == 60
    last.run()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_60", "step_80"]  # nothing stale


def test_max_steps_caps_the_recipe_and_ema_smooths(tmp_path):
    torch.manual_seed(0)
    loop = TrainLoop(spec(ema_decay=0.9), tmp_path, nn.Linear(4, 1), mse, regression(), max_steps=10)
    loop.run()
    trained = loop.trained_model()
    assert loop.step == 10
    raw = loop.accelerator.unwrap_model(loop.model)
    assert trained is not raw and not torch.equal(trained.weight, raw.weight)


def noisy_mse(seen: list[torch.Tensor]):
    """mse on inputs with noise from torch's global RNG (an augmentation); every batch is kept in `seen`."""

    def loss(model, batch):
        x, y = batch
        seen.append(x.clone())
        return mse(model, (x + 0.1 * torch.randn_like(x), y))

    return loss


def resumable(**changes) -> TrainSpec:
    """56 samples in batches of 16: 3 batches an epoch (8 dropped), so the 30 steps wrap over many epochs."""
    base = spec(steps=30, warmup_steps=3, lr_schedule="cosine", ema_decay=0.9, checkpoint_every=7)
    return dataclasses.replace(base, **changes)


def weights_and_ema(loop: TrainLoop) -> dict[str, torch.Tensor]:
    raw = loop.accelerator.unwrap_model(loop.model).state_dict()
    ema = loop.trained_model().state_dict()
    return {**{f"model.{k}": v.clone() for k, v in raw.items()}, **{f"ema.{k}": v.clone() for k, v in ema.items()}}


@functools.cache
def uninterrupted(grad_accum: int) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    seen: list[torch.Tensor] = []
    with tempfile.TemporaryDirectory() as out:
        torch.manual_seed(0)
        loop = TrainLoop(resumable(grad_accum_steps=grad_accum), Path(out), nn.Linear(4, 1), noisy_mse(seen),
                         regression(56))  # fmt: skip
        loop.run()
        return weights_and_ema(loop), seen


@pytest.mark.parametrize("grad_accum", [1, 2])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stops=st.lists(st.integers(1, 29), min_size=1, max_size=5, unique=True).map(sorted))
def test_a_run_stopped_and_resumed_at_any_steps_ends_at_the_uninterrupted_weights(
    deterministic_kernels, grad_accum, stops
):
    """Each stop is `max_steps` (a checkpoint, then the run ends); each resume starts from a new random model.
    The data stream continues where it stopped (same batches at the same steps, across epochs), the noise RNG
    too, and the cosine schedule spans the recipe's 30 steps whatever max_steps says: the weights and the EMA end
    bitwise equal to the run that never stopped."""
    seen: list[torch.Tensor] = []
    with tempfile.TemporaryDirectory() as out:
        expected, expected_batches = uninterrupted(grad_accum)
        for i, stop in enumerate([*stops, None]):
            torch.manual_seed(100 * i)  # the first run starts as the uninterrupted one, the others from random
            loop = TrainLoop(resumable(grad_accum_steps=grad_accum), Path(out), nn.Linear(4, 1), noisy_mse(seen),
                             regression(56), max_steps=stop)  # fmt: skip
            loop.run(resume=i > 0)
            assert loop.step == (stop or 30)
            assert len(seen) == loop.step * grad_accum
        got = weights_and_ema(loop)
    assert len(seen) == len(expected_batches)
    for step, (batch, want) in enumerate(zip(seen, expected_batches, strict=True)):
        assert torch.equal(batch, want), f"micro-batch {step} after resumes at {stops}"
    for name, value in expected.items():
        assert torch.equal(got[name], value), f"{name} after resumes at {stops}"


def test_max_steps_stops_early_on_the_recipes_schedule(tmp_path):
    """`max_steps` does not shorten the schedule: stopped at step 10 of a 20-step cosine recipe, the learning
    rate is the recipe's at step 10, not the end of a 10-step decay."""
    torch.manual_seed(0)
    recipe = spec(steps=20, warmup_steps=1, lr_schedule="cosine")
    loop = TrainLoop(recipe, tmp_path, nn.Linear(4, 1), mse, regression(), max_steps=10)
    loop.run()
    assert loop.step == 10 and [p.name for p in checkpoints(tmp_path)] == ["step_10"]
    assert loop.optimizer.param_groups[0]["lr"] == pytest.approx(5e-2 * training_loop.lr_factor(recipe, 20, 10))
    assert loop.optimizer.param_groups[0]["lr"] == pytest.approx(5e-2 * 0.5)


def test_a_hook_runs_at_the_step_a_run_stops_at_and_a_changed_stream_refuses_to_resume(tmp_path):
    """A run stopped by max_steps at a hook's step ran that hook (a snapshot there exists); a resume whose
    data or batch settings changed since the checkpoint is one line, not a silently different data stream."""
    torch.manual_seed(0)
    ran = []
    loop = TrainLoop(spec(steps=20, checkpoint_every=5), tmp_path, nn.Linear(4, 1), mse, regression(), max_steps=10)
    loop.run(hooks=[(5, lambda loop: ran.append(loop.step))])
    assert ran == [5, 10]
    for changed, data in ((spec(steps=20, batch_size=8), regression()), (spec(steps=20), regression(96))):
        again = TrainLoop(changed, tmp_path, nn.Linear(4, 1), mse, data)
        with pytest.raises(HarmoWAMError, match=r"batches_per_epoch 4 then, [68] now\); resuming would not"):
            again.resume()
    assert TrainLoop(spec(steps=20), tmp_path, nn.Linear(4, 1), mse, regression()).resume() == 10


def test_a_hook_drawing_random_numbers_does_not_move_the_training(tmp_path):
    """Hooks (previews, snapshots) run after a checkpoint: a run resumed from it never ran them, so they must
    leave torch's RNG as they found it."""
    results = []
    for name, hooks in [("plain", []), ("hooked", [(5, lambda loop: torch.rand(100))])]:
        torch.manual_seed(0)
        loop = TrainLoop(resumable(), tmp_path / name, nn.Linear(4, 1), noisy_mse([]), regression(56))
        loop.run(hooks=hooks)
        results.append(weights_and_ema(loop))
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_a_diverging_loss_is_a_clear_error(tmp_path):
    def broken(model, batch):
        return {"loss": model(batch[0]).sum() * float("nan")}

    with pytest.raises(HarmoWAMError, match="learning rate"):
        TrainLoop(spec(), tmp_path, nn.Linear(4, 1), broken, regression()).run()


def test_cosine_schedule_warms_up_then_decays_to_zero_at_the_last_step(tmp_path):
    torch.manual_seed(0)
    loop = TrainLoop(spec(steps=20, warmup_steps=5, lr_schedule="cosine"), tmp_path, nn.Linear(4, 1), mse, regression())
    rates = []
    loop.run(on_log=lambda log: rates.append(loop.optimizer.param_groups[0]["lr"]))
    peak = 5e-2
    assert rates[3] == pytest.approx(peak * 5 / 5 * 0.5 * (1 + math.cos(math.pi * 4 / 20)))  # after 4 steps
    assert rates[:4] == sorted(rates[:4]) and rates[4:] == sorted(rates[4:], reverse=True)
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)
    constant = TrainLoop(spec(steps=20, warmup_steps=5), tmp_path / "c", nn.Linear(4, 1), mse, regression())
    seen = []
    constant.run(on_log=lambda log: seen.append(constant.optimizer.param_groups[0]["lr"]))
    assert seen[0] == pytest.approx(peak * 2 / 5) and seen[4:] == [pytest.approx(peak)] * 16


def test_the_time_cap_stops_saves_and_resumes_counting_the_time_already_spent(tmp_path):
    """`max_minutes` with a fake clock of 10 s per step: no timed assertion."""
    torch.manual_seed(0)
    loop = TrainLoop(spec(steps=60, max_minutes=1.0), tmp_path, nn.Linear(4, 1), mse, regression())
    loop.clock = lambda: 10.0 * loop.step
    loop.run()
    assert loop.step == 6 and loop.stopped_by_time
    assert [p.name for p in checkpoints(tmp_path)] == ["step_6"]  # saved where it stopped

    again = TrainLoop(spec(steps=60, max_minutes=1.0), tmp_path, nn.Linear(4, 1), mse, regression())
    again.clock = lambda: 10.0 * again.step
    again.run(resume=True)  # its minute is spent already: nothing more
    assert again.step == 6 and again.stopped_by_time

    longer = TrainLoop(spec(steps=60, max_minutes=2.0), tmp_path, nn.Linear(4, 1), mse, regression())
    longer.clock = lambda: 10.0 * longer.step
    longer.run(resume=True)  # 60 s spent, 60 s more: steps 7-12
    assert longer.step == 12 and longer.stopped_by_time
    uncapped = TrainLoop(spec(steps=14), tmp_path, nn.Linear(4, 1), mse, regression())
    uncapped.run(resume=True)
    assert uncapped.step == 14 and not uncapped.stopped_by_time


def test_a_time_capped_cosine_schedule_decays_by_the_time_used(tmp_path):
    torch.manual_seed(0)
    capped = spec(steps=1000, warmup_steps=1, lr_schedule="cosine", max_minutes=1.0)
    loop = TrainLoop(capped, tmp_path, nn.Linear(4, 1), mse, regression())
    loop.clock = lambda: 10.0 * loop.step
    rates = []
    loop.run(on_log=lambda log: rates.append(loop.optimizer.param_groups[0]["lr"]))
    assert loop.step == 6
    # the last scheduler step came with 50 of the 60 s used (5 steps done): 5/6 of the way, not 6/1000
    assert rates[-1] == pytest.approx(5e-2 * 0.5 * (1 + math.cos(math.pi * 5 / 6)), rel=0.01)
    assert rates == sorted(rates, reverse=True)


def test_max_minutes_must_be_positive():
    from harmowam_core.config import load_recipe
    from harmowam_core.errors import RecipeError

    with pytest.raises(RecipeError, match="train_wm.max_minutes"):
        load_recipe("stack_cans", ["train_wm.max_minutes=0"])
    assert load_recipe("stack_cans", ["train_experts.max_minutes=2.5"]).train_experts.max_minutes == 2.5


def test_tensorboard_gets_the_loss_terms_and_learning_rate_every_log_interval(tmp_path):
    pytest.importorskip("tensorboard")
    torch.manual_seed(0)

    def terms(model, batch):
        loss = mse(model, batch)["loss"]
        return {"loss": loss, "half": loss / 2}

    config = {"train": {"steps": 12, "sizes": [1, 2]}, "name": "regression", "none": None}
    loop = TrainLoop(spec(steps=12), tmp_path, nn.Linear(4, 1), terms, regression(), log_with="tensorboard",
                     config=config, run_name="regression", log_every=5)  # fmt: skip
    loop.run()
    logs = scalars(tmp_path / "logs" / "regression")
    assert {"train/loss", "train/half", "train/lr", "train/samples_per_second"} <= set(logs)
    assert [step for step, _ in logs["train/loss"]] == [5, 10, 12]  # every 5 steps and the last
    assert logs["train/half"][0][1] == pytest.approx(logs["train/loss"][0][1] / 2)
    assert logs["train/lr"][-1][1] == pytest.approx(5e-2)
    assert loop.accelerator.trackers == []  # finished
    assert tracker_config(config) == {"train.steps": 12, "train.sizes": "[1, 2]", "name": "regression", "none": None}


def test_log_with_takes_installed_trackers_by_name_and_never_all(monkeypatch):
    assert parse_log_with(None) == parse_log_with("") == parse_log_with("none") == []
    monkeypatch.setattr(training_loop, "available_trackers", lambda: {"tensorboard"})
    assert parse_log_with("tensorboard, TensorBoard") == ["tensorboard"]
    for value, message in [
        ("all", "log_with: all is not accepted"),
        ("tensorbored", "no such tracker"),
        ("tensorboard,wandb", "the wandb package is not installed (pip install wandb)"),
    ]:
        with pytest.raises(HarmoWAMError, match=re.escape(message)):
            parse_log_with(value)
    monkeypatch.setattr(training_loop, "available_trackers", set)
    with pytest.raises(HarmoWAMError, match=re.escape("pip install 'harmowam[tensorboard]'")):
        TrainLoop(spec(), Path("unused"), nn.Linear(4, 1), mse, regression(), log_with="tensorboard")
