"""Shared fixtures: a tiny random BERT and small labelled data, built in-process (no downloads)."""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import pandas as pd
import pytest

from sentune.machine import environment

# Ray reads this when imported: tests keep every Ray service on loopback (see search.py).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

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


def make_reviews(n: int, seed: int = 0, words: tuple[int, int] = (200, 1000)) -> pd.DataFrame:
    """`n` long negative/positive texts of the fixture vocabulary, one word in ten a cue word."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ("negative", "positive")[i % 2]
        size = rng.randint(*words)
        text = [rng.choice(_CUES[label] if rng.random() < 0.1 else _FILLER) for _ in range(size)]
        rows.append({"text": " ".join(text), "label": label})
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


def _write_tiny_space(folder: Path, model_dir: Path, csv: Path, **budget) -> Path:
    budget = {
        "trials": 6,
        "max_epochs": 3,
        "grace_period": 1,
        "reduction_factor": 2,
        "concurrency": 1,
        # Confirmation over seeds retrains trials: only the test that checks it turns it on.
        "confirm_seeds": 0,
        **budget,
    }
    text = {
        "description": "tiny search for tests",
        "model": str(model_dir),
        "data": {"dataset": str(csv)},
        "budget": budget,
        "fixed": {"train.max_length": 32, "train.batch_size": 16, "train.effective_batch_size": 16},
        # Learning rates far apart make some trials clearly worse after one epoch, so ASHA
        # (sequential trials, seeded TPE) has trials to stop.
        "search": {
            "train.learning_rate": {"choice": [1e-5, 3e-3]},
            "head.dropout": {"uniform": [0.0, 0.3]},
        },
    }
    path = folder / "tiny.yaml"
    path.write_text(json.dumps(text))  # JSON is YAML
    return path


@pytest.fixture(scope="session")
def write_tiny_space():
    """`write_tiny_space(folder, model_dir, csv, **budget)` writes a tiny space file."""
    return _write_tiny_space


@pytest.fixture(scope="session")
def ray_session():
    """Local Ray for the whole test session: 2 CPUs, no dashboard, services on loopback."""
    import ray

    from sentune import search

    search.start_ray(search.SearchOptions(num_cpus=2, dashboard=False))
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_run(ray_session, tiny_model_dir, tiny_csv, tmp_path_factory) -> Path:
    """A finished search of 6 sequential trials on the tiny model (ASHA stops some)."""
    from sentune import search, space

    folder = tmp_path_factory.mktemp("search")
    spec = space.load(_write_tiny_space(folder, tiny_model_dir, tiny_csv))
    options = search.SearchOptions(
        storage=folder / "trials", precision="fp32", cache_dir=folder / "cache", dashboard=False
    )
    return search.run(spec, options=options)


S3_BUCKET = "sentune-test"


@pytest.fixture(scope="module")
def s3_env():
    """A moto S3 server on 127.0.0.1 with bucket `S3_BUCKET`; yields the environment that points
    pyarrow (and boto3) at it. The variables are set in this process for the module's tests."""
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    import boto3

    try:
        with environment(env):
            s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"])
            s3.create_bucket(Bucket=S3_BUCKET)
            yield env
    finally:
        server.stop()
