"""Torch-free batching shared by training, evaluation and serving.

Token ids come in as one integer array (or list) per text, special tokens included. This module
cuts them to a `max_length` (keeping the head, the tail or both ends of the text), groups texts
of similar length into batches and pads a batch to its longest member; `train/trial.py` wraps
the padded arrays in tensors, `serve/predict.py` hands them to onnxruntime. One implementation,
so that serving sees what training saw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sentune.config import TRUNCATIONS

#: `head_tail` truncation keeps this share of the room for text tokens from the start of the text
#: and the rest from its end. Sun et al. 2019 ("How to Fine-Tune BERT for Text Classification")
#: found head 128 + tail 382 of 510 best on IMDb, about a quarter head; 510 tokens give 127 + 383.
HEAD_TAIL_HEAD_SHARE = 0.25
#: Training batches are sorted by length inside windows of this many batches, then shuffled.
LENGTH_GROUP_WINDOW = 50
#: With `train.compile`, batches are padded to a multiple of this many tokens (`bucket_length`).
LENGTH_BUCKET = 32


def truncate(ids: Sequence[int] | np.ndarray, max_length: int, strategy: str = "head"):
    """Cut one text's token ids to `max_length`, keeping the special tokens at both ends.

    Args:
        ids: Token ids with the special tokens ([CLS] first, [SEP] last).
        max_length: The most tokens, special tokens included (at least 2).
        strategy: Which text tokens are kept (`config.TRUNCATIONS`): `head` the first ones,
            `tail` the last ones, `head_tail` the first quarter of the room and the last three
            quarters (`HEAD_TAIL_HEAD_SHARE`).

    Returns:
        `ids` itself when it fits (not copied), else `max_length` ids of the same type:
        [CLS], the kept text tokens, [SEP].
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    if strategy not in TRUNCATIONS:
        raise ValueError(f"unknown truncation {strategy!r}; use one of {', '.join(TRUNCATIONS)}")
    if len(ids) <= max_length:
        return ids
    room = max_length - 2  # text tokens between [CLS] and [SEP]
    head = {"head": room, "tail": 0, "head_tail": int(room * HEAD_TAIL_HEAD_SHARE)}[strategy]
    tail = room - head
    end = len(ids) - 1  # the position of [SEP]
    pieces = (ids[: 1 + head], ids[end - tail : end], ids[end:])
    if isinstance(ids, np.ndarray):
        return np.concatenate(pieces)
    return [*pieces[0], *pieces[1], *pieces[2]]


def bucket_length(length: int, max_length: int, multiple: int = LENGTH_BUCKET) -> int:
    """The padded width of a batch whose longest text has `length` tokens: the next multiple of
    `multiple`, capped at `max_length`.

    A compiled model (`train.compile`) is specialised to each input shape it sees; padding to
    these buckets bounds the shapes, so the recompiles, to `ceil(max_length / multiple)`.
    """
    if length < 1 or multiple < 1:
        raise ValueError(f"length and multiple must be at least 1, got {length} and {multiple}")
    if length > max_length:
        raise ValueError(f"length {length} exceeds max_length {max_length}; truncate first")
    return min(max_length, -(-length // multiple) * multiple)


def pad_batch(
    ids: Sequence[Sequence[int]], *, pad_id: int, width: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pad token id sequences to the longest one, or to `width` (at least the longest, e.g. a
    `bucket_length`): (input_ids, attention_mask), both int64."""
    longest = max(len(x) for x in ids)
    if width is not None and width < longest:
        raise ValueError(f"width {width} is shorter than the longest sequence ({longest})")
    width = width or longest
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = x
        mask[row, : len(x)] = 1
    return input_ids, mask


def pad_batch_static(
    ids: Sequence[Sequence[int]], *, pad_id: int, max_length: int, rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pad a batch to a few fixed shapes, for a compiled model: the width to `bucket_length` of
    its longest member, and up to `rows` rows by repeating its last sequence (a real text, so
    that no row is all padding; callers drop what the extra rows produce).

    Returns:
        (input_ids, attention_mask), both int64, of shape (max(rows, len(ids)), bucket width).
    """
    width = bucket_length(max(len(x) for x in ids), max_length)
    filled = list(ids) + [ids[-1]] * max(0, rows - len(ids))
    return pad_batch(filled, pad_id=pad_id, width=width)


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Batches of indices sorted by length, longest first (so memory peaks at once).

    Used wherever every example is seen once and order does not matter: evaluation, serving.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def length_grouped_batches(
    lengths: np.ndarray,
    *,
    batch_size: int,
    rng: np.random.Generator,
    labels: np.ndarray | None = None,
) -> list[list[int]]:
    """One epoch of training batches (lists of example indices) with little padding.

    The shuffled order is cut into windows of `LENGTH_GROUP_WINDOW` batches, each window is
    sorted by length, and the batches are shuffled. With `labels`, the epoch keeps its size but
    draws examples with replacement so that every class is equally likely (oversampling).

    Args:
        lengths: Token count of each example, already capped at the max_length.
        batch_size: Examples per batch.
        rng: The source of randomness (the trial's, so that a resumed trial draws the same).
        labels: Class ids, to oversample rare classes; None keeps every example once.
    """
    lengths = np.asarray(lengths)
    n = len(lengths)
    if labels is not None:
        counts = np.bincount(labels)
        weights = 1.0 / counts[labels]
        order = rng.choice(n, size=n, replace=True, p=weights / weights.sum())
    else:
        order = rng.permutation(n)
    window = batch_size * LENGTH_GROUP_WINDOW
    batches = []
    for start in range(0, n, window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
