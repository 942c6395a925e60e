"""The training loop: bit-exact resume, gradient accumulation, side-effect-free validation,
metrics files, and the errors that protect a run folder."""

import pytest
import torch

from omniflex.train import CheckpointManager, read_metrics, run_training
from tests.train.events import scalars
from tests.train.standin import build_standin, tiny_config
from tests.train.test_checkpoint import assert_same


def final_state(out_dir):
    payload = CheckpointManager(out_dir / "checkpoints").load()
    return {k: payload[k] for k in ("model", "optimizer", "data", "ranks", "step")}


@pytest.mark.parametrize("precision", ["float32", "flex16+5"])
def test_kill_and_resume_continues_bit_for_bit(tmp_path, precision):
    changes = dict(
        precision=precision, steps=8, ckpt_every=4, val_every=4,
        model_overrides={"dropout": 0.1},  # the RNG state must come back too
    )  # fmt: skip
    full = run_training(tiny_config(tmp_path / "a", **changes), build_model=build_standin)

    config = tiny_config(tmp_path / "b", **changes)
    cut = run_training(config, build_model=build_standin, max_steps=6)  # "killed" at step 6,
    assert cut.step == 6 and cut.checkpoint.name == "step_00000004"  # after the step-4 save
    torch.manual_seed(1234)  # a fresh process would not share this one's RNG
    resumed = run_training(config, build_model=build_standin, resume=True)

    assert resumed.losses == {s: full.losses[s] for s in range(5, 9)}  # exact equality
    assert resumed.val_losses == {8: full.val_losses[8]}
    assert_same(final_state(tmp_path / "a" / "run"), final_state(tmp_path / "b" / "run"))
    steps = [r["step"] for r in read_metrics(tmp_path / "b" / "run") if "loss" in r]
    assert steps == list(range(1, 9))  # records of the lost steps 5-6 were replaced


def test_flex_checkpoint_holds_mantissas_optimizer_flex_state_and_autoflex_history(tmp_path):
    config = tiny_config(tmp_path, precision="flex16+5", steps=2, ckpt_every=2)
    run_training(config, build_model=build_standin)
    state = final_state(tmp_path / "run")
    assert state["model"]["fc1.weight_mantissa"].dtype == torch.int16
    moments = next(iter(state["optimizer"]["state"].values()))
    assert moments["exp_avg_mantissa"].dtype == torch.int16
    assert set(moments["autoflex"]) == {"exp_avg", "exp_avg_sqrt", "update"}
    extra = state["ranks"][0]["model_extra"]["fc1._extra_state"]
    assert extra["op"]["states"]["input"]["history"]  # Autoflex maxima


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    one = run_training(
        tiny_config(tmp_path / "a", batch_size=4, grad_accum=1), build_model=build_standin
    )
    two = run_training(
        tiny_config(tmp_path / "b", batch_size=4, grad_accum=2), build_model=build_standin
    )
    for step, loss in one.losses.items():
        assert two.losses[step] == pytest.approx(loss, rel=1e-6)
    a, b = final_state(tmp_path / "a" / "run"), final_state(tmp_path / "b" / "run")
    for key, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][key], tensor, rtol=1e-5, atol=1e-6)


def test_validation_leaves_no_trace_on_training(tmp_path):
    often = tiny_config(tmp_path / "a", precision="flex16+5", val_every=1, ckpt_every=0)
    never = tiny_config(tmp_path / "b", precision="flex16+5", val_every=0, ckpt_every=0)
    assert (
        run_training(often, build_model=build_standin).losses
        == run_training(never, build_model=build_standin).losses
    )


def test_metrics_files_are_written(tmp_path):
    result = run_training(tiny_config(tmp_path), build_model=build_standin)
    run = tmp_path / "run"
    records = read_metrics(run)
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, 7))
    assert {"lr", "grad_norm", "tokens_per_s", "step_time_s", "loss_tokens"} <= set(train[0])
    assert [r["step"] for r in records if "val_loss" in r] == [3, 6]
    assert train[-1]["loss"] < train[0]["loss"]  # it learns
    (_events,) = (run / "tb").glob("events.out.tfevents.*")
    assert {"train/loss", "train/lr", "val/loss"} <= set(scalars(run / "tb"))
    assert (run / "config.yaml").is_file()
    assert result.checkpoint == run / "checkpoints" / "step_00000006"


def test_run_folder_is_protected(tmp_path):
    config = tiny_config(tmp_path, steps=2, ckpt_every=1)
    with pytest.raises(FileNotFoundError, match="start without resume"):
        run_training(config, build_model=build_standin, resume=True)
    run_training(config, build_model=build_standin)
    with pytest.raises(FileExistsError, match="resume it"):
        run_training(config, build_model=build_standin)
    with pytest.raises(ValueError, match=r"lr: 0.01 -> 0.02"):
        run_training(config.replace(lr=0.02), build_model=build_standin, resume=True)


def test_batches_without_loss_tokens_give_zero_loss_not_nan(tmp_path):
    from omniflex.train import write_token_cache

    prompts_only = [(list(range(i, i + 20)), [0] * 20) for i in range(10)]
    write_token_cache(tmp_path / "tokens" / "train", prompts_only)
    write_token_cache(tmp_path / "tokens" / "val", prompts_only)
    result = run_training(tiny_config(tmp_path, steps=2, val_every=0), build_model=build_standin)
    assert result.losses == {1: 0.0, 2: 0.0}


def test_trained_flex_model_loads_for_inference(tmp_path):
    from omniflex.train import load_model_state
    from tests.train.standin import TinyLM

    config = tiny_config(tmp_path, precision="flex16+5", steps=3, ckpt_every=3)
    run_training(config, build_model=build_standin)
    state, _ = load_model_state(tmp_path / "run")  # a run folder, or a step_* folder
    model = TinyLM.build("flex16+5")
    model.load_state_dict(state)  # strict: mantissas, exponents and Autoflex states
    ids = torch.randint(0, 48, (2, 8))
    trained = CheckpointManager(tmp_path / "run" / "checkpoints").load()
    assert torch.equal(model.fc1.weight.mantissa, trained["model"]["fc1.weight_mantissa"])
    assert torch.isfinite(model(ids).logits).all()
