"""Two CPU processes under torchrun (gloo) train like one process with the same global batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omniflex.train import CheckpointManager, DistContext, run_training
from omniflex.train.distributed import wrap_model
from tests.train.standin import TinyLM, build_standin, tiny_config

WORKER = Path(__file__).with_name("ddp_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(spec: dict, tmp_path: Path, nproc: int = 2) -> dict:
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(WORKER),
        str(spec_path),
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


def test_wrap_model_refuses_what_it_cannot_do():
    two = DistContext(rank=0, world_size=2)  # checked before any collective runs
    with pytest.raises(ValueError, match="parallel=ddp for flex precisions"):
        wrap_model(TinyLM.build("flex16+5"), two, "fsdp")
    with pytest.raises(ValueError, match="'ddp' or 'fsdp'"):
        wrap_model(TinyLM.build(), two, "zero3")
    single = TinyLM.build()
    assert wrap_model(single, DistContext(), "ddp") is single  # one process: unchanged
