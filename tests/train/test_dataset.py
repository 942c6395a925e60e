"""Token cache and TokenDataset: round trip, packing, deterministic order, exact resume."""

import json

import numpy as np
import pytest
import torch

from omniflex.train import TokenDataset, write_token_cache


def docs():
    return [
        ([1, 2, 3, 4, 5], [0, 0, 1, 1, 1]),
        ([6, 7, 8], [1, 1, 1]),
        ([], []),
        ([9] * 12, [0] * 12),
    ]


def test_cache_round_trip(tmp_path):
    meta = write_token_cache(tmp_path / "c", docs())
    assert meta == {"version": 1, "tokens": 20, "documents": 3, "loss_tokens": 6, "max_id": 9}
    assert json.loads((tmp_path / "c" / "meta.json").read_text()) == meta
    data = TokenDataset(tmp_path / "c", seq_len=4, shuffle=False)
    assert data.num_documents == 3 and list(data.offsets) == [0, 5, 8, 20]
    assert list(data.ids[:8]) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert not list((tmp_path).glob(".c.tmp-*"))  # written under a temporary name


def test_blocks_pack_documents_and_shift_targets(tmp_path):
    write_token_cache(tmp_path / "c", docs())
    data = TokenDataset(tmp_path / "c", seq_len=4, shuffle=False)
    assert len(data) == (20 - 1) // 4
    batch = TokenDataset.collate(data.next_blocks(2))
    assert batch.input_ids.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert batch.targets.tolist() == [[2, 3, 4, 5], [6, 7, 8, 9]]
    assert batch.loss_mask.tolist() == [[False, True, True, True], [True, True, True, False]]
    assert batch.num_loss_tokens == 6


def test_order_is_fixed_by_seed_and_epoch_and_resumes_exactly(tmp_path):
    rng = np.random.default_rng(0)
    many = [(rng.integers(0, 100, 30).tolist(), [1] * 30) for _ in range(20)]
    write_token_cache(tmp_path / "c", many)

    def stream(seed, n, state=None):
        data = TokenDataset(tmp_path / "c", seq_len=7, seed=seed)
        if state is not None:
            data.load_state_dict(state)
        return [b[0].tolist() for b in data.next_blocks(n)], data

    full, _ = stream(0, 250)  # more than three epochs
    again, _ = stream(0, 250)
    other, _ = stream(1, 250)
    assert full == again and full != other
    first, data = stream(0, 123)
    rest, _ = stream(0, 127, state=data.state_dict())
    assert first + rest == full
    assert data.epoch >= 1  # the split point is past an epoch boundary


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="document 0: ids has 2 tokens but loss_mask has 1"):
        write_token_cache(tmp_path / "c", [([1, 2], [1])])
    with pytest.raises(ValueError, match="loss_mask values must be 0 or 1"):
        write_token_cache(tmp_path / "c", [([1, 2], [1, 2])])
    with pytest.raises(FileNotFoundError, match="write_token_cache"):
        TokenDataset(tmp_path / "missing", seq_len=4)
    write_token_cache(tmp_path / "c", [([1, 2, 3], [1, 1, 1])])
    with pytest.raises(ValueError, match="fewer than one block"):
        TokenDataset(tmp_path / "c", seq_len=8)
    data = TokenDataset(tmp_path / "c", seq_len=2)
    with pytest.raises(ValueError, match="seq_len"):
        TokenDataset(tmp_path / "c", seq_len=1).load_state_dict(data.state_dict())


def _many_docs(n=60, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for d in range(n):
        length = int(rng.integers(2, 30))
        ids = [1000 + d] * length  # every token names its document
        out.append((ids, [0] + [1] * (length - 1)))
    out.append(([7] * 40, [1] * 40))  # longer than a block: cannot be trained whole
    return out


def test_document_packing_keeps_documents_whole_and_apart(tmp_path):
    write_token_cache(tmp_path / "c", _many_docs())
    data = TokenDataset(tmp_path / "c", seq_len=32, seed=1, packing="documents")
    assert data.skipped_documents == 1
    for epoch in (0, 1):
        seen = []
        for i in range(data.blocks_in_epoch(epoch)):
            ids, mask, segments, positions, *_ = data.block(epoch, i)
            assert len(ids) == 33
            for s in set(segments.tolist()) - {-1}:
                doc = ids[segments == s]
                assert len(set(doc.tolist())) == 1  # one document per segment
                d = int(doc[0]) - 1000
                assert len(doc) == data.offsets[d + 1] - data.offsets[d]  # and all of it
                assert positions[segments == s].tolist() == list(range(len(doc)))
                seen.append(d)
            assert (ids[segments == -1] == 0).all() and not mask[segments == -1].any()
        assert sorted(seen) == list(range(60))  # every document once an epoch
    fill = sum((data.block(0, i).segments >= 0).sum() for i in range(data.blocks_in_epoch(0)))
    assert fill / (33 * data.blocks_in_epoch(0)) > 0.85  # first fit wastes little


def test_document_batches_never_target_across_documents(tmp_path):
    write_token_cache(tmp_path / "c", _many_docs())
    data = TokenDataset(tmp_path / "c", seq_len=32, seed=2, packing="documents")
    batch = TokenDataset.collate(data.next_blocks(4))
    assert batch.positions.shape == batch.segments.shape == batch.input_ids.shape
    inputs, targets = batch.input_ids[batch.loss_mask], batch.targets[batch.loss_mask]
    assert (inputs == targets).all()  # a document's tokens all carry its own id
    assert set(batch.model_kwargs()) == {"positions", "segments"}
    assert (
        TokenDataset.collate(TokenDataset(tmp_path / "c", seq_len=32).next_blocks(2)).model_kwargs()
        == {}
    )


def test_document_packing_resumes_exactly(tmp_path):
    write_token_cache(tmp_path / "c", _many_docs())
    a = TokenDataset(tmp_path / "c", seq_len=32, seed=3, packing="documents")
    head = a.next_blocks(5)
    b = TokenDataset(tmp_path / "c", seq_len=32, seed=3, packing="documents")
    b.load_state_dict(a.state_dict())
    for x, y in zip(a.next_blocks(40), b.next_blocks(40), strict=True):
        assert all(np.array_equal(u, v) for u, v in zip(x, y, strict=True))
    assert head
    stream = TokenDataset(tmp_path / "c", seq_len=32, seed=3)
    with pytest.raises(ValueError, match="packing"):
        stream.load_state_dict(a.state_dict())
    write_token_cache(tmp_path / "long", [([1] * 5, [1] * 5)])
    with pytest.raises(ValueError, match="no document fits"):
        TokenDataset(tmp_path / "long", seq_len=3, packing="documents")


def _with_tasks(tmp_path, packing):
    docs = _many_docs()
    write_token_cache(tmp_path / "c", docs)
    tasks = ["asr", "tts"]
    doc_tasks = [d % 2 for d in range(len(docs))]  # even documents: asr, odd: tts
    (tmp_path / "c.json").write_text(json.dumps({"tasks": tasks, "doc_tasks": doc_tasks}))
    return TokenDataset(tmp_path / "c", seq_len=32, seed=4, packing=packing,
                        task_weights={"asr": 3.0, "tts": 0.5})  # fmt: skip


@pytest.mark.parametrize("packing", ["stream", "documents"])
def test_task_weights_weigh_each_target_by_its_documents_task(tmp_path, packing):
    data = _with_tasks(tmp_path, packing)
    assert data.tasks == ("asr", "tts") and data.task_weights.tolist() == [3.0, 0.5]
    blocks = data.next_blocks(6)
    batch = TokenDataset.collate(blocks, data.task_weights)
    doc = batch.targets - 1000  # tokens name their document (the long one: 7 - 1000 < 0)
    keep = batch.loss_mask & (doc >= 0)
    want = torch.where(doc % 2 == 0, 3.0, 0.5)
    assert torch.equal(batch.loss_weights[keep], want[keep])
    assert (batch.loss_weights[~batch.loss_mask] == 0).all()
    assert batch.loss_weight_sum == pytest.approx(
        sum(TokenDataset.loss_weight_of(b, data.task_weights) for b in blocks)
    )
    # the model's loss is then the weighted mean
    from omniflex.model.transformer import OmniModel

    logits = torch.randn(*batch.targets.shape, 1100)
    plain = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), batch.targets.flatten(), reduction="none"
    ).view_as(batch.targets)
    w = batch.loss_weights
    got = OmniModel.loss(logits, batch.targets, batch.model_loss_mask())
    assert got == pytest.approx(float((plain * w).sum() / w.sum()), rel=1e-5)


def test_task_weights_need_known_tasks(tmp_path):
    _with_tasks(tmp_path, "stream")
    with pytest.raises(ValueError, match=r"does not hold; its tasks: asr, tts"):
        TokenDataset(tmp_path / "c", seq_len=32, task_weights={"vqa": 2.0})
    write_token_cache(tmp_path / "bare", docs())
    with pytest.raises(ValueError, match="no sidecar"):
        TokenDataset(tmp_path / "bare", seq_len=4, task_weights={"asr": 2.0})


def test_task_rates_move_compute_between_tasks(tmp_path):
    docs = _many_docs()
    write_token_cache(tmp_path / "c", docs)
    doc_tasks = [d % 2 for d in range(len(docs))]  # even documents: asr, odd: tts
    (tmp_path / "c.json").write_text(json.dumps({"tasks": ["asr", "tts"], "doc_tasks": doc_tasks}))

    def visits(epoch, **kw):
        data = TokenDataset(tmp_path / "c", seq_len=32, seed=4, packing="documents", **kw)
        ids = np.concatenate(
            [b.ids for b in (data.block(epoch, i) for i in range(data.blocks_in_epoch(epoch)))]
        )
        firsts = ids[np.flatnonzero(ids >= 1000)]
        return {
            int(d): int(n)
            for d, n in zip(*np.unique(firsts - 1000, return_counts=True), strict=True)
        }

    plain = visits(0)
    rated = visits(0, task_rates={"asr": 3.0, "tts": 0.5})
    per_doc = {d: n // plain[d] for d, n in rated.items()}
    assert all(per_doc[d] == 3 for d in per_doc if d % 2 == 0)  # every asr document, 3 times
    assert {per_doc.get(d, 0) for d in plain if d % 2} <= {0, 1}
    tts = [d for d in plain if d % 2]
    kept = sum(d in rated for d in tts)
    assert 0 < kept < len(tts)  # a seeded part of the tts documents, not all, not none
    other = visits(1, task_rates={"asr": 3.0, "tts": 0.5})
    assert {d for d in other if d % 2} != {d for d in rated if d % 2}  # a new part each epoch
    assert visits(0, task_rates={"asr": 3.0, "tts": 0.5}) == rated  # seeded
    with pytest.raises(ValueError, match="packing='documents'"):
        TokenDataset(tmp_path / "c", seq_len=32, task_rates={"asr": 2.0})
    with pytest.raises(ValueError, match="no document"):
        TokenDataset(tmp_path / "c", seq_len=32, packing="documents",
                     task_rates={"asr": 0.0, "tts": 0.0}).next_blocks(1)  # fmt: skip
