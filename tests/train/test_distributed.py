"""Two CPU processes under torchrun (gloo) train like one process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omniflex.train import CheckpointManager, DistContext, load_model_state, run_training
from omniflex.train.distributed import wrap_model
from omniflex.train.metrics import read_metrics
from tests.train.standin import TinyLM, build_standin, tiny_config

WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun(spec: dict, tmp_path: Path, nproc: int = 2) -> dict:
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    # --standalone: torchrun picks a free port itself (no race with other jobs for one)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
        str(nproc), str(WORKER), str(spec_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMNIFLEX_FLEX_KERNEL": "eager"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    if proc.returncode:
        pytest.fail(
            f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return json.loads(Path(spec["out"]).read_text())


def test_two_gloo_processes_match_one_process(tmp_path):
    # One process: micro-batches of 8. Two processes: 2 micro-steps of 2 per rank. Same global
    # batch of 8 sequences, so the same losses up to float summation order.
    single = tiny_config(
        tmp_path / "one", batch_size=8, grad_accum=1, steps=6, ckpt_every=3, val_every=6
    )
    double = single.replace(out_dir=str(tmp_path / "two"), grad_accum=2)
    # flex16+5 under DDP: killed after the step-3 checkpoint and resumed, bit for bit (each rank
    # gets back its own Autoflex histories and RNG).
    flex = double.replace(out_dir=str(tmp_path / "flex"), precision="flex16+5")
    cut = flex.replace(out_dir=str(tmp_path / "flex-cut"))
    fsdp = double.replace(out_dir=str(tmp_path / "fsdp"), parallel="fsdp")
    runs = [
        {"name": "float32", "config": double.to_dict()},
        {"name": "fsdp", "config": fsdp.to_dict(), "max_steps": 4},
        {"name": "fsdp-resumed", "config": fsdp.to_dict(), "resume": True},
        {"name": "flex", "config": flex.to_dict()},
        {"name": "cut", "config": cut.to_dict(), "max_steps": 4},
        {"name": "resumed", "config": cut.to_dict(), "resume": True},
    ]
    expected = run_training(single, build_model=build_standin)
    got = torchrun({"runs": runs, "out": str(tmp_path / "out.json")}, tmp_path)
    losses = {int(k): v for k, v in got["float32"]["losses"].items()}
    fsdp_losses = {int(k): v for k, v in got["fsdp"]["losses"].items()}
    fsdp_losses.update({int(k): v for k, v in got["fsdp-resumed"]["losses"].items()})
    assert losses.keys() == expected.losses.keys() == fsdp_losses.keys()
    for step, loss in expected.losses.items():
        assert abs(losses[step] - loss) < 1e-5, (step, losses[step], loss)
        assert abs(fsdp_losses[step] - loss) < 1e-5, (step, fsdp_losses[step], loss)
    assert abs(got["float32"]["val_losses"]["6"] - expected.val_losses[6]) < 1e-5

    one = CheckpointManager(tmp_path / "one" / "run" / "checkpoints").load()
    two = CheckpointManager(tmp_path / "two" / "checkpoints").load()
    assert two["world_size"] == 2 and len(two["ranks"]) == 2
    for key, tensor in one["model"].items():
        torch.testing.assert_close(two["model"][key], tensor, rtol=1e-5, atol=1e-6)

    flex_losses = got["flex"]["losses"]
    assert got["resumed"]["losses"] == {k: flex_losses[k] for k in ("4", "5", "6")}
    assert flex_losses["6"] < flex_losses["1"]


def test_flex_model_trains_sharded_by_fsdp(tmp_path):
    # flex16+5 under FSDP2 for 20 steps: int16 mantissas all-gathered, the shards of a weight on
    # one exponent, FlexAdam state sharded; killed after the step-10 (sharded) checkpoint and
    # resumed. (No clipping, so that FSDP's sharded gradient norm cannot round otherwise.)
    single = tiny_config(
        tmp_path / "one", precision="flex16+5", batch_size=8, grad_accum=1, steps=20,
        ckpt_every=10, val_every=20, grad_clip=0.0,
    )  # fmt: skip
    flex = single.replace(out_dir=str(tmp_path / "fsdp"), grad_accum=2, parallel="fsdp")
    cut = flex.replace(out_dir=str(tmp_path / "cut"))
    ddp = flex.replace(out_dir=str(tmp_path / "ddp"), parallel="ddp")
    float32 = flex.replace(out_dir=str(tmp_path / "float32"), precision="float32")
    ddp_cut = ddp.replace(out_dir=str(tmp_path / "ddp-cut"))
    alone = flex.replace(out_dir=str(tmp_path / "alone"))  # cut here, resumed in one process
    runs = [
        {"name": "fsdp", "config": flex.to_dict()},
        {"name": "cut", "config": cut.to_dict(), "max_steps": 10},
        {"name": "resumed", "config": cut.to_dict(), "resume": True},
        {"name": "ddp", "config": ddp.to_dict()},
        {"name": "float32", "config": float32.to_dict(), "max_steps": 2},
        {"name": "ddp-cut", "config": ddp_cut.to_dict(), "max_steps": 10},
        {
            "name": "ddp-to-fsdp",
            "config": ddp_cut.replace(parallel="fsdp").to_dict(),
            "resume": True,
        },
        {"name": "alone", "config": alone.to_dict(), "max_steps": 10},
    ]
    expected = run_training(single, build_model=build_standin)
    got = torchrun({"runs": runs, "out": str(tmp_path / "out.json")}, tmp_path)
    fsdp = got["fsdp"]["losses"]
    # Sharding changes nothing: the same numbers as the replicated (DDP) flex run, bit for bit.
    assert fsdp == got["ddp"]["losses"] and len(fsdp) == 20
    assert got["fsdp"]["val_losses"] == got["ddp"]["val_losses"]
    # One process sees the whole batch in each op, two see half each: Autoflex picks the
    # activations' and gradients' exponents per rank (as under DDP), so the losses agree to
    # flex16 precision, not to float32 summation order (measured: 1.5e-4 at most).
    for step, loss in expected.losses.items():
        assert abs(fsdp[str(step)] - loss) < 1e-3, (step, fsdp[str(step)], loss)
    # Resumed from the sharded checkpoint of step 10, bit for bit.
    assert got["resumed"]["losses"] == {k: fsdp[k] for k in map(str, range(11, 21))}
    step10 = tmp_path / "cut" / "checkpoints" / "step_00000010"
    assert sorted(p.name for p in step10.glob("shard-*")) == [
        "shard-00000.json", "shard-00000.safetensors", "shard-00001.json",
        "shard-00001.safetensors",
    ]  # fmt: skip
    # The shards, joined, are the replicated run's weights, mantissa for mantissa.
    whole, _ = load_model_state(tmp_path / "fsdp")
    replicated, _ = load_model_state(tmp_path / "ddp")
    for key, tensor in replicated.items():
        if isinstance(tensor, torch.Tensor):
            assert torch.equal(whole[key], tensor), key
    model = TinyLM.build("flex16+5")
    model.load_state_dict(whole)  # loads for inference in one process
    # An unsharded checkpoint resumes sharded, and a sharded one unsharded: the shards are cut
    # anew from the whole state. DDP's checkpoint of step 10, resumed under FSDP, continues
    # bit for bit (same processes, same numbers); one process continues with rank 0's
    # activation histories, so within flex precision.
    assert got["ddp-to-fsdp"]["losses"] == {k: fsdp[k] for k in map(str, range(11, 21))}
    with pytest.warns(RuntimeWarning, match="written by 2 processes"):
        one = run_training(alone.replace(grad_accum=1), build_model=build_standin, resume=True)
    print("one process after sharded", max(abs(one.losses[k] - fsdp[str(k)]) for k in one.losses))
    assert list(one.losses) == list(range(11, 21))
    for step, loss in one.losses.items():
        assert abs(loss - fsdp[str(step)]) < 1e-3, (step, loss, fsdp[str(step)])
    # All-gathers carry int16 mantissas (float32 for the one float gain): per step, the
    # forward's and the backward's all-gather of each rank's rows.
    sent = [r["all_gather_bytes"] for r in read_metrics(tmp_path / "fsdp") if "loss" in r]
    sent32 = [r["all_gather_bytes"] for r in read_metrics(tmp_path / "float32") if "loss" in r]
    rows = {name: -(-p.shape[0] // 2) * p[0].numel() for name, p in model.named_parameters()}
    flex_bytes = 2 * sum(n * (4 if name == "gain" else 2) for name, n in rows.items())
    assert sent == [flex_bytes] * 20 and sent32 == [2 * 4 * sum(rows.values())] * 2
    assert flex_bytes / sent32[0] < 0.51


def test_wrap_model_refuses_what_it_cannot_do():
    two = DistContext(rank=0, world_size=2)  # checked before any collective runs
    with pytest.raises(ValueError, match="'ddp' or 'fsdp'"):
        wrap_model(TinyLM.build(), two, "zero3")
    single = TinyLM.build()
    assert wrap_model(single, DistContext(), "ddp") is single  # one process: unchanged
