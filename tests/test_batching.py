"""The torch-free batching shared by training and serving."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from sentune.data.batching import length_grouped_batches, pad_batch, sorted_batches, truncate


def test_truncate_keeps_the_final_special_token():
    ids = np.arange(10)
    assert truncate(ids, 4).tolist() == [0, 1, 2, 9]
    assert truncate(list(range(10)), 4) == [0, 1, 2, 9]
    short = np.arange(3)
    assert truncate(short, 4) is short
    with pytest.raises(ValueError):
        truncate(ids, 1)


def test_truncate_strategies_keep_the_chosen_ends():
    cls, sep = 101, 102
    ids = np.array([cls, *range(1, 21), sep])  # 20 text tokens
    assert truncate(ids, 10, "head").tolist() == [cls, *range(1, 9), sep]
    assert truncate(ids, 10, "tail").tolist() == [cls, *range(13, 21), sep]
    # 8 tokens of room: a quarter (2) from the start, the other 6 from the end.
    assert truncate(ids, 10, "head_tail").tolist() == [cls, 1, 2, *range(15, 21), sep]
    assert truncate(ids.tolist(), 10, "head_tail") == [cls, 1, 2, *range(15, 21), sep]
    assert truncate(ids, 2, "head_tail").tolist() == [cls, sep]
    for strategy in ("head", "tail", "head_tail"):
        assert truncate(ids, 22, strategy) is ids
        assert len(truncate(ids, 7, strategy)) == 7
    # Sun et al. 2019 kept head 128 + tail 382 of 512; a quarter of 510 is 127.
    long = np.arange(2000)
    cut = truncate(long, 512, "head_tail")
    assert cut[:128].tolist() == list(range(128))  # [CLS] and 127 head tokens
    assert cut[128:].tolist() == list(range(2000 - 384, 2000))  # 383 tail tokens and [SEP]
    with pytest.raises(ValueError, match="unknown truncation"):
        truncate(ids, 10, "middle")


def test_pad_batch_pads_to_the_longest_with_a_mask():
    input_ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert input_ids.dtype == np.int64 and mask.dtype == np.int64


def test_sorted_batches_cover_every_index_longest_first():
    lengths = np.array([3, 9, 1, 7, 5])
    batches = sorted_batches(lengths, 2)
    assert batches == [[1, 3], [4, 0], [2]]


def test_length_grouped_batches_shuffle_groups_and_oversample():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=500)
    batches = length_grouped_batches(lengths, batch_size=10, rng=np.random.default_rng(1))
    assert sorted(i for b in batches for i in b) == list(range(500))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 10  # random batches of 10 from 3..60 spread ~45
    labels = np.array([0] * 450 + [1] * 50)
    drawn = length_grouped_batches(
        lengths, batch_size=10, rng=np.random.default_rng(1), labels=labels
    )
    share = np.mean(labels[[i for b in drawn for i in b]])
    assert 0.4 < share < 0.6


def test_batching_does_not_import_torch():
    import subprocess

    code = "import sys, sentune.data.batching; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bucket_length_rounds_up_to_multiples_capped_at_max_length():
    from sentune.data.batching import bucket_length

    assert [bucket_length(n, 128) for n in (1, 31, 32, 33, 64, 65, 127, 128)] == [
        32,
        32,
        32,
        64,
        64,
        96,
        128,
        128,
    ]
    # A max_length that is not a multiple is its own last bucket.
    assert bucket_length(95, 100) == 96 and bucket_length(97, 100) == 100
    assert bucket_length(5, 64, multiple=8) == 8
    # Few shapes for a compiled model: every length of 1..128 falls in one of 4 buckets.
    assert len({bucket_length(n, 128) for n in range(1, 129)}) == 4
    with pytest.raises(ValueError):
        bucket_length(129, 128)
    with pytest.raises(ValueError):
        bucket_length(0, 128)


def test_pad_batch_to_a_given_width():
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=0, width=6)
    assert ids.tolist() == [[1, 2, 3, 0, 0, 0], [4, 0, 0, 0, 0, 0]]
    assert mask.sum(1).tolist() == [3, 1]
    with pytest.raises(ValueError, match="shorter"):
        pad_batch([[1, 2, 3]], pad_id=0, width=2)


def test_static_batches_have_bucketed_widths_and_full_rows():
    from sentune.data.batching import pad_batch_static

    ids, mask = pad_batch_static([[5, 6, 7], [8]], pad_id=0, max_length=64, rows=4)
    assert ids.shape == (4, 32)
    # The filler rows repeat the last real text: never a row of padding only.
    assert ids[2:, 0].tolist() == [8, 8] and mask.sum(1).tolist() == [3, 1, 1, 1]
    full, _ = pad_batch_static([[1] * 40] * 4, pad_id=0, max_length=64, rows=4)
    assert full.shape == (4, 64)
