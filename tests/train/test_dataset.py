"""Token cache and TokenDataset: round trip, packing, deterministic order, exact resume."""

import json

import numpy as np
import pytest

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
            ids, mask, segments, positions = data.block(epoch, i)
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
    fill = sum((data.block(0, i)[2] >= 0).sum() for i in range(data.blocks_in_epoch(0)))
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
