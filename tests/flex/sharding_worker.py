"""Run by ``torchrun`` from ``test_sharding.py``: train a small flex model sharded by FSDP2
(``fully_shard_flex``) and, in the same process, unsharded, on the same batches, and write
what rank 0 sees as JSON to ``argv[1]``.

Every rank trains on the same batches, so the sharded run computes what one process
computes, element for element: the gradient average over ranks is exact and every flex tensor
settles on the maximum over its shards."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from omniflex.flex import FlexAdam, FlexConfig, FlexWeight, convert_to_flex
from omniflex.flex.sharding import fully_shard_flex, local_tensor

VOCAB, STEPS = 48, 6


class Net(nn.Module):
    """An embedding, blocks of uneven width (33 rows: shards of 17 and 16; 1 row: rank 1's
    shards are empty), a float gain."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.blocks = nn.ModuleList([nn.Linear(16, 33), nn.Linear(33, 16), nn.Linear(16, 1)])
        self.gain = nn.Parameter(torch.ones(16))
        self.head = nn.Linear(16, VOCAB, bias=False)

    def forward(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)  # (B, T, C)
        x = x + self.blocks[1](F.gelu(self.blocks[0](x))) * torch.sigmoid(self.blocks[2](x))
        logits = self.head(x * self.gain)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def build(config: FlexConfig | None) -> Net:
    torch.manual_seed(0)
    net = Net()
    if config is not None:
        convert_to_flex(net, config=config)
    return net


def train(net: Net, config: FlexConfig | None) -> list[float]:
    opt = FlexAdam(net.parameters(), lr=1e-2, weight_decay=0.1, config=config)
    batches = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(STEPS):
        ids = torch.randint(0, VOCAB, (4, 8), generator=batches)
        loss = net(ids, (ids + 1) % VOCAB)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    net.optimizer = opt  # for the comparison below
    return losses


def compare(sharded: Net, whole: Net) -> dict:
    """Per flex weight: this rank's rows and exponent against the unsharded run's, and the
    same for FlexAdam's moments."""
    rank, ranks = dist.get_rank(), dist.get_world_size()
    out = {}
    params = zip(sharded.named_parameters(), whole.parameters(), strict=True)
    for (name, p), q in params:
        mine, ref = local_tensor(p), q
        if isinstance(mine, FlexWeight):
            rows = _rows(ref.mantissa, rank, ranks)
            out[name] = [torch.equal(mine.mantissa, rows), int(mine.exponent) == int(ref.exponent)]
        s, r = sharded.optimizer.state[p], whole.optimizer.state[q]
        for role in ("exp_avg", "exp_avg_sqrt"):
            rows = _rows(r[role + "_mantissa"], rank, ranks)
            same = torch.equal(s[role + "_mantissa"], rows)
            out[f"{name}.{role}"] = [same, int(s[role + "_exponent"]) == int(r[role + "_exponent"])]
    return out


def _rows(whole: torch.Tensor, rank: int, ranks: int) -> torch.Tensor:
    """FSDP2's dim-0 shard of ``whole`` on ``rank`` (empty past the last chunk)."""
    chunks = torch.chunk(whole, ranks)
    return chunks[rank] if rank < len(chunks) else whole[:0]


def main(out_path: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    result = {}
    try:
        for residence in ("host", "device"):
            config = FlexConfig(autoflex_state=residence, kernel="eager")
            whole = build(config)
            expected = train(whole, config)
            sharded = build(config)
            comm = fully_shard_flex(sharded, blocks=list(sharded.blocks))
            losses = train(sharded, config)
            exponents = [int(local_tensor(p).exponent) for p in sharded.parameters()
                         if isinstance(local_tensor(p), FlexWeight)]  # fmt: skip
            everyone = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, exponents)
            compared = [None] * dist.get_world_size()  # every rank's shards
            dist.all_gather_object(compared, compare(sharded, whole))
            result[residence] = {
                "losses": losses, "expected": expected, "compare": compared,
                "exponents_agree": all(e == everyone[0] for e in everyone),
                "bytes": comm.bytes_sent, "calls": comm.calls,
            }  # fmt: skip
        float_net = build(None)
        comm = fully_shard_flex(float_net, blocks=list(float_net.blocks))
        train(float_net, None)
        result["float32"] = {"bytes": comm.bytes_sent, "calls": comm.calls}
    finally:
        dist.destroy_process_group()
    if rank == 0:
        Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
