"""Shared fixtures: a tiny random BERT and small labelled data, built in-process (no downloads)."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

LABELS = ("negative", "neutral", "positive")
_CUES = {
    "negative": ["awful", "terrible", "hate", "broken", "worst", "sad"],
    "neutral": ["table", "monday", "report", "meeting", "city", "train"],
    "positive": ["great", "love", "wonderful", "best", "happy", "amazing"],
}
_FILLER = ["the", "a", "this", "is", "was", "my", "day", "phone", "movie", "really", "so", "it"]
VOCAB_WORDS = sorted({w for ws in _CUES.values() for w in ws} | set(_FILLER))


def make_texts(n: int, seed: int = 0, imbalance=(0.4, 0.4, 0.2)) -> pd.DataFrame:
    """`n` distinct short texts whose label is signalled by cue words (a tiny model learns it)."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = rng.choices(LABELS, weights=imbalance)[0]
        words = rng.sample(_FILLER, rng.randint(3, 7)) + rng.sample(_CUES[label], 2)
        rng.shuffle(words)
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    """A 600-row CSV (`text`, `label`) with three imbalanced classes."""
    path = tmp_path_factory.mktemp("data") / "tiny.csv"
    make_texts(600).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer BERT (hidden 32) with a WordPiece tokenizer over the fixture vocabulary."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *VOCAB_WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder
