"""Flex weights under FSDP2: views keep the flex storage, the all-gather hooks rebuild the whole
weight, shards share one exponent, and two gloo processes train like one (``torchrun``)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omniflex.flex import AutoflexState, DeviceAutoflexState, FlexNonFiniteError, FlexWeight
from omniflex.flex.sharding import ShardMax

WORKER = Path(__file__).with_name("sharding_worker.py")


def weight(rows: int = 5, cols: int = 4, seed: int = 0) -> FlexWeight:
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    return FlexWeight.from_float(x, AutoflexState("w.storage"))


def test_layout_ops_give_flex_views_that_share_the_exponent():
    w = weight()
    top, bottom = torch.chunk(w, 2)  # what FSDP2 does to shard a parameter
    assert isinstance(top, FlexWeight) and isinstance(bottom, FlexWeight)
    assert torch.equal(bottom.mantissa, w.mantissa[3:]) and bottom.exponent == w.exponent
    assert bottom.state is w.state
    flat = w.view(-1)
    assert isinstance(flat, FlexWeight) and flat.mantissa.data_ptr() == w.mantissa.data_ptr()
    w._set_exponent(w.exponent - 1)  # one exponent for every view of one tensor
    assert top.exponent == bottom.exponent == flat.exponent == w.exponent
    torch.testing.assert_close(bottom.dequantize(), w.dequantize()[3:], rtol=0, atol=0)


def test_new_zeros_and_flex_to_flex_copy_move_mantissas_exactly():
    w = weight()
    updates = w.state.updates
    padded = w.new_zeros((3, 4))  # FSDP2 pads a short shard so
    assert isinstance(padded, FlexWeight) and padded.exponent == w.exponent
    assert padded.mantissa.dtype == torch.int16 and not padded.mantissa.any()
    padded.narrow(0, 0, 2).copy_(w[3:])  # a copy between flex tensors re-quantises nothing
    assert torch.equal(padded.mantissa[:2], w.mantissa[3:])
    assert w.state.updates == updates
    # A float source is still quantised through the weight's state, as before.
    w.copy_(torch.zeros(5, 4))
    assert w.state.updates == updates + 1 and not w.mantissa.any()


class FakeMesh:
    def __init__(self, ranks: int) -> None:
        self.ranks = ranks

    def size(self) -> int:
        return self.ranks


def test_all_gather_hooks_send_padded_mantissas_and_rebuild_the_weight():
    w = weight(rows=5)
    shards = torch.chunk(w, 2)  # rows 3 + 2: the second is padded to 3
    inputs, metas = [], []
    for shard in shards:
        (mantissa,), meta = shard.fsdp_pre_all_gather(FakeMesh(2), w.shape, (4, 1), None, None)
        assert mantissa.dtype == torch.int16 and mantissa.shape == (3, 4)
        inputs.append(mantissa)
        metas.append(meta)
    assert not inputs[1][2].any()
    gathered = torch.cat(inputs)  # what the all-gather delivers, (6, 4)
    whole, inner = shards[0].fsdp_post_all_gather((gathered,), metas[0], torch.float32)
    assert inner[0] is gathered and isinstance(whole, FlexWeight)
    unpadded = torch.as_strided(whole, (5, 4), (4, 1), 0)  # FSDP2 trims the padding so
    assert isinstance(unpadded, FlexWeight)
    assert torch.equal(unpadded.dequantize(), w.dequantize())
    # A later all-gather refills the buffer and passes the weight back to take the exponent.
    w._set_exponent(w.exponent + 1)
    _, meta = shards[0].fsdp_pre_all_gather(FakeMesh(2), w.shape, (4, 1), None, None)
    assert shards[0].fsdp_post_all_gather((gathered,), meta, torch.float32, out=unpadded) is None
    assert unpadded.exponent == w.exponent


@pytest.mark.parametrize("kind", [AutoflexState, DeviceAutoflexState])
def test_amax_reduce_settles_a_shard_on_the_whole_tensors_maximum(kind):
    shard = torch.full((4,), 0.01)  # another shard holds 3.0
    alone, shared = kind("alone"), kind("shared")
    shared.amax_reduce = lambda amax: amax * 0 + 3.0 if torch.is_tensor(amax) else 3.0
    whole = kind("whole")
    whole.quantize(torch.tensor([0.01, 3.0]))
    out = shared.quantize(shard)
    assert int(out.exponent) == int(whole.state_dict()["last_exponent"])
    assert shared.state_dict()["history"] == whole.state_dict()["history"]
    assert int(alone.quantize(shard).exponent) < int(out.exponent)


def test_shard_max_sends_nan_as_inf_so_that_every_rank_raises(monkeypatch):
    sent = []
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, op, group: sent.append(t))
    reduce = ShardMax(group=None, device=torch.device("cpu"))
    assert reduce(float("nan")) == math.inf and reduce(2.5) == 2.5
    assert sent[0].dtype == torch.float64  # a host maximum travels exactly
    out = reduce(torch.tensor(float("nan")))
    assert torch.is_tensor(out) and out.item() == math.inf and reduce.calls == 3
    state = AutoflexState("shard")
    state.amax_reduce = lambda amax: math.inf  # another shard overflowed to Inf
    with pytest.raises(FlexNonFiniteError, match="Inf reached flex tensor 'shard'"):
        state.quantize(torch.ones(3))


def test_two_gloo_processes_shard_a_flex_model_and_train_like_one(tmp_path):
    out = tmp_path / "out.json"
    # --standalone: torchrun picks a free port itself (no race with other jobs for one)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(WORKER), str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    if proc.returncode:
        pytest.fail(f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    got = json.loads(out.read_text())
    for residence in ("host", "device"):
        run = got[residence]
        # Same batches on both ranks: sharding changes no bit of the computation.
        assert run["losses"] == run["expected"], residence
        assert run["exponents_agree"]
        for rank, compared in enumerate(run["compare"]):
            bad = {k: v for k, v in compared.items() if v != [True, True]}
            assert not bad, (residence, rank, bad)
            assert len(compared) == 8 + 9 * 2  # 8 flex weights; moments of 9 parameters
    # The same all-gathers carry int16 mantissas instead of float32 values (only the gain,
    # 16 floats, stays float32): close to half the bytes.
    flex, float32 = got["host"], got["float32"]
    assert flex["calls"] == float32["calls"] > 0
    assert 0.5 < flex["bytes"] / float32["bytes"] < 0.52, (flex["bytes"], float32["bytes"])
