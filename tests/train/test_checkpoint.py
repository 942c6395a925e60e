"""Checkpoints: exact round trip of any payload, atomic saves, the latest pointer, pruning."""

import json
import math

import numpy as np
import pytest
import torch

from omniflex.train import CheckpointManager, capture_rng_state, restore_rng_state
from omniflex.train import checkpoint as checkpoint_module


def payload(seed=0):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(3, 4, generator=gen)
    return {
        "model": {
            "a.weight": weight,
            "tied.weight": weight,  # the same tensor under two names (tied embeddings)
            "flex.weight_mantissa": torch.arange(6, dtype=torch.int16).view(2, 3),
            "flex.weight_exponent": torch.tensor(-12),
            "flex._extra_state": {"op": {"clock": 7, "states": {"input": {"history": [0.1]}}}},
        },
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, generator=gen)}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.95), "params": [0]}],
        },
        "numbers": [1.0 / 3.0, math.inf, -0.0, 2**60, None, True, "text"],
        "array": np.arange(5, dtype=np.uint32),
    }


def assert_same(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, float):
        assert math.copysign(1, a) == math.copysign(1, b) and (a == b)
    else:
        assert a == b


def test_payload_round_trips_exactly(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt")
    path = manager.save(5, payload())
    loaded = manager.load()
    assert loaded.pop("step") == 5 and loaded.pop("path") == str(path)
    assert_same(loaded, payload())
    # Tensors in safetensors, the rest in JSON; tied tensors stored once.
    from safetensors.torch import load_file

    model_tensors = load_file(path / "model.safetensors")
    assert set(model_tensors) == {"a.weight", "flex.weight_mantissa", "flex.weight_exponent"}
    meta = json.loads((path / "meta.json").read_text())
    assert meta["model"]["tied.weight"] == {"__tensor__": "a.weight", "file": "model"}
    assert meta["model"]["flex._extra_state"]["op"]["clock"] == 7


def test_crash_mid_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path / "ckpt")
    manager.save(1, payload(seed=1))

    def crash(src, dst):
        raise OSError("killed during rename")

    monkeypatch.setattr(checkpoint_module, "_rename", crash)
    with pytest.raises(OSError, match="killed"):
        manager.save(2, payload(seed=2))
    monkeypatch.undo()

    assert manager.latest().name == "step_00000001"
    loaded = manager.load()
    assert loaded["step"] == 1
    assert torch.equal(loaded["model"]["a.weight"], payload(seed=1)["model"]["a.weight"])
    assert list(manager.root.glob(".tmp-*"))  # the half-written save is still there ...
    manager.save(2, payload(seed=2))
    assert not list(manager.root.glob(".tmp-*"))  # ... until the next save clears it
    assert manager.load()["step"] == 2


def test_crash_before_the_pointer_moves_keeps_latest_on_the_old_step(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path / "ckpt")
    manager.save(1, payload(seed=1))
    real = checkpoint_module._rename

    def crash_on_pointer(src, dst):
        if dst.name == "latest":
            raise OSError("killed before the pointer moved")
        real(src, dst)

    monkeypatch.setattr(checkpoint_module, "_rename", crash_on_pointer)
    with pytest.raises(OSError):
        manager.save(2, payload(seed=2))
    monkeypatch.undo()
    assert manager.load()["step"] == 1  # latest still names step 1
    manager.save(2, payload(seed=3))  # the same step again replaces the orphan
    loaded = manager.load()
    assert loaded["step"] == 2
    assert torch.equal(loaded["model"]["a.weight"], payload(seed=3)["model"]["a.weight"])


def test_keep_last_and_lost_pointer(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt", keep_last=2)
    for step in (10, 20, 30):
        manager.save(step, payload())
    assert [p.name for p in manager.checkpoints()] == ["step_00000020", "step_00000030"]
    (manager.root / "latest").unlink()
    assert manager.latest().name == "step_00000030"  # falls back to the newest complete one


def test_missing_checkpoint_errors_say_what_to_do(tmp_path):
    manager = CheckpointManager(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="start without resume"):
        manager.load()
    with pytest.raises(TypeError, match="cannot store a set at 'x'"):
        manager.save(1, {"model": {}, "x": {1, 2}})


def test_rng_state_round_trip():
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(), __import__("random").random())
    restore_rng_state(state)
    again = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_sharded_checkpoint_keeps_one_file_per_rank_and_joins_them(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt")
    folder = manager.shard_folder(7, fresh=True)
    whole = torch.arange(10, dtype=torch.int16).view(5, 2)
    for rank, rows in enumerate(torch.chunk(whole, 2)):  # FSDP2's dim-0 shards: 3 + 2 rows
        shard = {
            "model": {"w_mantissa": rows.clone(), "w_exponent": torch.tensor(-3)},
            "sharded": ["w_mantissa"],
            "optimizer": {"state": {0: {"exp_avg_mantissa": rows.clone()}}, "param_groups": []},
            "sharded_optimizer": [[0, "exp_avg_mantissa"]],
        }
        manager.save_shard(folder, rank, shard)
    common = {"model": {}, "ranks": [{"model_extra": {}}] * 2}
    with pytest.raises(FileNotFoundError, match="ranks \\[2\\]"):
        manager.save(7, common, folder=folder, shards=3)
    path = manager.save(7, common, folder=folder, shards=2)
    assert not folder.exists() and manager.latest() == path
    loaded = manager.load()
    assert loaded["shards"] == 2
    second = manager.load_shard(path, 1)
    assert_same(second["optimizer"]["state"][0]["exp_avg_mantissa"], whole[3:])
    with pytest.raises(FileNotFoundError, match="number of processes"):
        manager.load_shard(path, 2)
    state, _ = checkpoint_module.load_model_state(path)
    assert torch.equal(state["w_mantissa"], whole) and int(state["w_exponent"]) == -3
    _, optimizer = manager.join_shards(path, 2)  # to resume with another number of processes
    assert torch.equal(optimizer["state"][0]["exp_avg_mantissa"], whole)
