"""A trial's batches: one epoch of training batches grouped by length (`training_batches`), and
a batch of token ids padded into tensors (`collate`): to its longest member or, for a compiled
model, to a static shape whose filler rows the loss ignores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sentune.config import TrainConfig
from sentune.data import Split
from sentune.data.batching import length_grouped_batches, pad_batch, pad_batch_static
from sentune.train.evaluate import to_device


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def to(self, device) -> Batch:
        """On `device`; to a GPU from pinned memory, without blocking the host."""
        return Batch(
            *(to_device(t, device) for t in (self.input_ids, self.attention_mask, self.labels))
        )


def training_batches(
    split: Split, train: TrainConfig, *, rng: np.random.Generator
) -> list[list[int]]:
    """One epoch of training batches (lists of example indices), grouped by length.

    With `imbalance: oversample` the epoch keeps its size but draws examples with replacement so
    that every class is equally likely (see `batching.length_grouped_batches`).
    """
    return length_grouped_batches(
        np.minimum(split.lengths, train.max_length),
        batch_size=train.batch_size,
        rng=rng,
        labels=split.labels if train.imbalance == "oversample" else None,
    )


#: The label of a filler row (`collate` with `static_max_length`): cross-entropy ignores it.
IGNORE_LABEL = -100


def collate(
    ids: list[np.ndarray],
    labels: np.ndarray,
    *,
    pad_id: int,
    static_max_length: int | None = None,
    rows: int | None = None,
) -> Batch:
    """Pad a batch of token id arrays to its longest member; or, for a compiled model (with
    `static_max_length` and `rows`), to a bucketed width and `rows` rows whose filler rows have
    the label `IGNORE_LABEL` (see `batching.pad_batch_static`)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if static_max_length is None:
        input_ids, mask = pad_batch(ids, pad_id=pad_id)
    else:
        input_ids, mask = pad_batch_static(
            ids, pad_id=pad_id, max_length=static_max_length, rows=rows or len(ids)
        )
        filler = torch.full((len(input_ids) - len(ids),), IGNORE_LABEL, dtype=torch.long)
        labels = torch.cat([labels, filler])
    return Batch(torch.from_numpy(input_ids), torch.from_numpy(mask), labels)
