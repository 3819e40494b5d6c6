"""Long texts: max_length chosen from the data, caps from the space file, and the floor's verdict
(a real tiny search on long reviews)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import make_reviews

from sentune import cli, config, runs, space
from sentune.search import preflight

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def long_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny BERT with room for 1024 positions (the fixture tokenizer)."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("long-bert")
    for item in tiny_model_dir.iterdir():
        if item.name.startswith(("tokenizer", "vocab", "special")):
            shutil.copy(item, folder / item.name)
    config = BertConfig.from_pretrained(tiny_model_dir)
    config.max_position_embeddings = 1024
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture
def long_reviews(tmp_path) -> Path:
    """A folder of 200-1000-word reviews, fewer than smoke's 600/300 examples."""
    folder = tmp_path / "reviews"
    folder.mkdir()
    make_reviews(130, seed=1).to_csv(folder / "train.csv", index=False)
    make_reviews(40, seed=2).to_csv(folder / "validation.csv", index=False)
    return folder


def test_smoke_on_long_reviews_picks_max_length_from_the_data(
    ray_session, long_model_dir, long_reviews, tmp_path, monkeypatch, caplog, capsys
):
    monkeypatch.chdir(tmp_path)  # the token cache goes here
    caplog.set_level(logging.INFO, logger="sentune")
    argv = ["search", "smoke", "--dataset", str(long_reviews), "--model", str(long_model_dir)]
    argv += ["--storage", "trials", "--analysis", "analysis", "--no-dashboard"]
    assert cli.main([*argv, "--precision", "fp32"]) == 0

    (run_dir,) = Path("trials").glob("smoke-*")
    manifest = json.loads((run_dir / runs.MANIFEST).read_text())
    chosen = manifest["max_length"]
    (value,) = chosen["values"]
    assert chosen["rule"] == "auto p95" and chosen["limit"] == 1024
    assert value % 32 == 0 and value <= 1024
    assert chosen["truncated_share"][str(value)] <= 0.1 or value == 1024  # covers >= 90 %
    assert value >= manifest["data"]["stats"]["train_token_lengths"]["p90"]
    assert manifest["space"]["fixed"]["train.max_length"] == value
    for params in run_dir.glob("*/params.json"):
        assert json.loads(params.read_text())["train.max_length"] == value
    assert f"train.max_length {value} (auto p95; the model takes 1024)" in caplog.text
    assert "it truncates" in caplog.text
    # smoke's 600/300 are caps: the folder's smaller splits are used whole.
    sizes = manifest["data"]["stats"]["split_sizes"]
    assert sizes["validation"] == 40 and sizes["train"] + sizes["test"] == 130
    assert "data.train_size is 600 (a cap, from the space file)" in caplog.text
    assert "data.val_size is 300 (a cap, from the space file)" in caplog.text

    # ~100 long texts and two epochs: TF-IDF wins, and the summary starts by saying so.
    out = capsys.readouterr().out.splitlines()
    top = next(i for i, line in enumerate(out) if line.startswith("Top trials of"))
    assert out[top - 1].startswith("The TF-IDF floor (")
    assert "too little data" in out[top - 1]


def test_a_fixed_max_length_that_cuts_most_texts_is_warned_about(
    tiny_model_dir, tiny_csv, tmp_path, write_tiny_space, caplog
):
    from sentune.data import prepare

    spec = space.load(write_tiny_space(tmp_path, tiny_model_dir, tiny_csv))
    data = prepare(spec.data, str(tiny_model_dir), cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.INFO, logger="sentune.search"):
        resolved, chosen = preflight.max_length_for_data(spec, data, str(tiny_model_dir))
    assert resolved == spec and chosen.rule == "fixed" and chosen.values == (32,)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]

    short = space.load(
        write_tiny_space(tmp_path, tiny_model_dir, tiny_csv), overrides={"train.max_length": 8}
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sentune.search"):
        preflight.max_length_for_data(short, data, str(tiny_model_dir))
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    share = (data.train.lengths > 8).mean()
    assert share > config.TRUNCATION_WARN_SHARE
    assert warning.startswith(f"train.max_length 8 truncates {100 * share:.1f}% of the training")
    assert "train.truncation: head_tail" in warning
