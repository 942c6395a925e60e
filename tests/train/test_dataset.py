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
