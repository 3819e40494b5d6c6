"""Serving an export: the texts are cut the way the exported trial cut them."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import VOCAB_WORDS

from sentune.data.batching import truncate
from sentune.errors import ExportError
from sentune.serve import predict


@pytest.fixture
def fake_export(tmp_path, tiny_model_dir, monkeypatch):
    """An export folder with the tiny tokenizer; the ONNX session is never run here."""
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(tiny_model_dir / predict.TOKENIZER_FILE, folder / predict.TOKENIZER_FILE)
    (folder / predict.ONNX_FILE).write_bytes(b"")
    monkeypatch.setattr(predict, "build_session", lambda path, threads=None: None)

    def write(**manifest):
        base = {"labels": ["negative", "neutral", "positive"], "max_length": 8, "pad_id": 0}
        (folder / predict.EXPORT_MANIFEST).write_text(json.dumps({**base, **manifest}))
        return folder

    return write


def _untruncated(folder, texts):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / predict.TOKENIZER_FILE))
    tokenizer.no_truncation()
    return [enc.ids for enc in tokenizer.encode_batch(texts)]


TEXTS = [" ".join(VOCAB_WORDS[i % len(VOCAB_WORDS)] for i in range(n)) for n in (3, 20, 41)] + [
    "great"
]


def test_predictor_cuts_head_and_tail_like_its_trial(fake_export):
    folder = fake_export(truncation="head_tail")
    predictor = predict.Predictor(folder)
    full = _untruncated(folder, TEXTS)
    assert max(len(ids) for ids in full) > 8
    expected = [truncate(ids, 8, "head_tail") for ids in full]
    assert predictor.tokenize(TEXTS) == expected
    assert predictor.tokenize(TEXTS) != [truncate(ids, 8, "head") for ids in full]


def test_an_export_without_truncation_cuts_the_head(fake_export):
    folder = fake_export()
    full = _untruncated(folder, TEXTS)
    assert predict.Predictor(folder).tokenize(TEXTS) == [truncate(ids, 8, "head") for ids in full]


def test_an_unknown_truncation_is_refused(fake_export):
    with pytest.raises(ExportError, match="unknown truncation 'middle'"):
        predict.Predictor(fake_export(truncation="middle"))
