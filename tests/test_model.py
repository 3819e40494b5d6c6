"""The sentiment model: heads, loss weights, save/load round trips and user-facing errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import LABELS
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    DistilBertConfig,
    RobertaConfig,
)

from sentune.config import ACTIVATIONS, POOLINGS, HeadConfig
from sentune.errors import ModelError
from sentune.train.encoders import MODELS, encoder_max_length, load_tokenizer, resolve_model
from sentune.train.model import SentimentModel, build_model, class_weights, load_model

TEXTS = ["i love this phone", "the meeting was on monday", "worst day it was really awful"]


@pytest.fixture(scope="module")
def batch(tiny_model_dir) -> dict[str, torch.Tensor]:
    """Three texts of different lengths, so the batch has padding."""
    return dict(load_tokenizer(str(tiny_model_dir))(TEXTS, padding=True, return_tensors="pt"))


@pytest.fixture(scope="module")
def distilbert_dir(tmp_path_factory) -> Path:
    """A tiny random DistilBERT (no pooler, no token_type_ids) sharing the BERT fixture's vocab."""
    folder = tmp_path_factory.mktemp("tiny-distilbert")
    config = DistilBertConfig(
        vocab_size=64, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128
    )
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    return folder


def _build(model_dir: Path, **head) -> SentimentModel:
    return build_model(str(model_dir), HeadConfig(**head), label_names=list(LABELS))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("layers", [0, 1, 2, 3])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_every_head_gives_logits_and_loss(tiny_model_dir, batch, pooling, layers, activation):
    model = _build(tiny_model_dir, pooling=pooling, layers=layers, activation=activation)
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert len(linears) == layers + 1
    assert all(m.out_features == 32 for m in linears[:-1])  # None width: encoder hidden size
    out = model(**batch, labels=torch.tensor([2, 1, 0]))
    assert out.logits.shape == (3, len(LABELS))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert linears[0].weight.grad is not None
    assert model(**batch).loss is None


def test_head_width_and_label_names(tiny_model_dir):
    model = _build(tiny_model_dir, layers=2, width=16)
    assert [m.out_features for m in model.head if isinstance(m, nn.Linear)] == [16, 16, 3]
    assert model.config.id2label == dict(enumerate(LABELS))
    assert model.config.label2id == {name: i for i, name in enumerate(LABELS)}
    assert model.training


def test_mean_pooling_ignores_padding(tiny_model_dir, batch):
    model = _build(tiny_model_dir, pooling="mean").eval()
    row = {k: v[:1, : int(batch["attention_mask"][0].sum())] for k, v in batch.items()}
    with torch.no_grad():
        padded, alone = model(**batch).logits[0], model(**row).logits[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_invalid_head_is_a_model_error(tiny_model_dir):
    with pytest.raises(ModelError, match="head.pooling: 'max'"):
        _build(tiny_model_dir, pooling="max")
    # The bounds are config.LIMITS, the same a space file is checked against.
    with pytest.raises(ModelError, match=r"head.dropout: 0.97 is outside \[0.0, 0.95\]"):
        _build(tiny_model_dir, dropout=0.97)
    with pytest.raises(ModelError, match=r"head.layers: 4 is outside \[0, 3\]"):
        _build(tiny_model_dir, layers=4)
    with pytest.raises(ModelError, match="class_weights: 2 weights for 3 labels"):
        build_model(
            str(tiny_model_dir), HeadConfig(), label_names=list(LABELS), class_weights=[1, 2]
        )


def test_class_weight_math():
    counts = [60, 30, 10]
    balanced = class_weights(counts, "balanced")
    assert balanced == pytest.approx([100 / 180, 100 / 90, 100 / 30])
    # Balanced weights average 1 over examples.
    assert sum(w * c for w, c in zip(balanced, counts, strict=True)) / sum(counts) == pytest.approx(
        1.0
    )
    sqrt = class_weights(counts, "sqrt")
    assert sum(sqrt) / 3 == pytest.approx(1.0)
    ratios = [math.sqrt(b / balanced[0]) for b in balanced]
    assert [w / sqrt[0] for w in sqrt] == pytest.approx(ratios)
    assert class_weights(counts, "none") is None
    assert class_weights(counts, "oversample") is None
    with pytest.raises(ModelError, match="'focal'"):
        class_weights(counts, "focal")
    with pytest.raises(ModelError, match="every class needs training examples"):
        class_weights([5, 0, 3], "balanced")


def test_class_weights_change_the_loss(tiny_model_dir, batch):
    labels = torch.tensor([2, 1, 0])
    weights = class_weights([60, 30, 10], "balanced")
    torch.manual_seed(1)
    plain = _build(tiny_model_dir).eval()
    torch.manual_seed(1)
    weighted = build_model(
        str(tiny_model_dir), HeadConfig(), label_names=list(LABELS), class_weights=weights
    ).eval()
    with torch.no_grad():
        a, b = plain(**batch, labels=labels), weighted(**batch, labels=labels)
    assert torch.equal(a.logits, b.logits)
    expected = nn.functional.cross_entropy(a.logits, labels, weight=torch.tensor(weights))
    torch.testing.assert_close(b.loss, expected)
    assert not torch.isclose(a.loss, b.loss)


def test_build_model_keeps_pretrained_encoder_weights(tiny_model_dir):
    reference = AutoModel.from_pretrained(tiny_model_dir).state_dict()
    model = _build(tiny_model_dir, pooling="pooler", layers=1)
    encoder = model.encoder.state_dict()
    assert encoder.keys() == reference.keys()
    assert all(torch.equal(encoder[k], reference[k]) for k in reference)
    last = model.head[-1]
    assert torch.equal(last.bias, torch.zeros_like(last.bias))
    assert 0.01 < last.weight.std().item() < 0.03  # initializer_range 0.02

    random = build_model(
        str(tiny_model_dir), HeadConfig(), label_names=list(LABELS), pretrained=False
    )
    word = "embeddings.word_embeddings.weight"
    assert not torch.equal(random.encoder.state_dict()[word], reference[word])


@pytest.mark.parametrize("pooling", POOLINGS)
def test_save_load_round_trip_is_exact(tiny_model_dir, batch, tmp_path, pooling):
    model = build_model(
        str(tiny_model_dir),
        HeadConfig(pooling=pooling, layers=2, width=24, activation="tanh"),
        label_names=list(LABELS),
        class_weights=[0.5, 1.0, 2.0],
    ).eval()
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    # One label set in config.json: the nested encoder config has no stale LABEL_0/LABEL_1.
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["encoder"]["id2label"] == {str(i): n for i, n in enumerate(LABELS)}
    assert saved["encoder"]["label2id"] == {n: i for i, n in enumerate(LABELS)}
    assert "LABEL_0" not in (tmp_path / "config.json").read_text()

    loaded, info = SentimentModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert type(auto) is SentimentModel
    for restored in (loaded, auto, load_model(tmp_path)):
        assert not restored.training
        assert restored.config.class_weights == [0.5, 1.0, 2.0]
        assert restored.config.id2label == dict(enumerate(LABELS))
        with torch.no_grad():
            assert torch.equal(restored(**batch).logits, expected)


def test_distilbert_has_no_pooler_and_no_token_type_ids(distilbert_dir):
    with pytest.raises(ModelError, match="pooling 'pooler'.*no pooler"):
        _build(distilbert_dir, pooling="pooler")
    model = _build(distilbert_dir, pooling="mean").eval()
    ids = torch.tensor([[2, 10, 11, 3]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with_types = model(input_ids=ids, token_type_ids=torch.zeros_like(ids)).logits
    assert torch.equal(plain, with_types)


def test_encoder_max_length(tiny_model_dir, tmp_path):
    assert encoder_max_length(str(tiny_model_dir)) == 128
    _build(tiny_model_dir).save_pretrained(tmp_path / "saved")
    assert encoder_max_length(str(tmp_path / "saved")) == 128
    RobertaConfig(max_position_embeddings=514, pad_token_id=1).save_pretrained(tmp_path / "rob")
    assert encoder_max_length(str(tmp_path / "rob")) == 512


def test_resolve_model():
    minilm = Path(resolve_model("minilm"))
    assert minilm.is_dir() and (minilm / "config.json").is_file()
    assert resolve_model("bert-base-uncased") == MODELS["bert-base-uncased"]
    assert resolve_model("someone/unknown-model") == "someone/unknown-model"


def test_folder_without_config_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="is not a model folder"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelError, match="is not a model folder"):
        load_model(tmp_path)


def test_load_model_refuses_a_plain_encoder(tiny_model_dir):
    with pytest.raises(ModelError, match="not a sentune model folder"):
        load_model(tiny_model_dir)


def test_unknown_hub_id_offline_is_one_line(monkeypatch):
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; patch its constant as well.
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for load in (load_tokenizer, encoder_max_length):
        with pytest.raises(ModelError) as err:
            load("someone/unknown-model")
        message = str(err.value)
        assert "\n" not in message
        assert "'someone/unknown-model'" in message and "local model folder" in message
        assert all(name in message for name in MODELS)
    with pytest.raises(ModelError, match="someone/unknown-model"):
        build_model("someone/unknown-model", HeadConfig(), label_names=list(LABELS))


def test_tied_weights_are_none(tiny_model_dir):
    assert not _build(tiny_model_dir).all_tied_weights_keys


def test_encoder_layers_keeps_the_first_k_layers_and_loads_back(tiny_model_dir, tmp_path):
    from sentune.train.encoders import check_encoder_layers

    labels = ["negative", "neutral", "positive"]
    full = build_model(str(tiny_model_dir), HeadConfig(), label_names=labels)
    one = build_model(str(tiny_model_dir), HeadConfig(), label_names=labels, encoder_layers=1)
    assert len(one.encoder.encoder.layer) == 1 and len(full.encoder.encoder.layer) == 2
    # The kept layer is the pretrained first layer, not a fresh one.
    kept, original = one.encoder.encoder.layer[0], full.encoder.encoder.layer[0]
    assert torch.equal(kept.output.dense.weight, original.output.dense.weight)
    one.save_pretrained(tmp_path)
    assert len(load_model(tmp_path).encoder.encoder.layer) == 1
    check_encoder_layers(str(tiny_model_dir), 2)
    with pytest.raises(ModelError, match="has 2 encoder layers; keep 1 to 2"):
        build_model(str(tiny_model_dir), HeadConfig(), label_names=labels, encoder_layers=3)


@pytest.mark.parametrize("encoder", ["bert", "distilbert"])
def test_padded_batch_needs_no_host_read_of_the_mask(
    tiny_model_dir, distilbert_dir, batch, monkeypatch, encoder
):
    """On a GPU every read of a tensor's value on the host (`bool(t)`, `t.item()`) waits for
    the device; transformers' own 2D-mask check is one per forward. The 4D mask that the model
    passes instead gives the same logits and needs no such read."""
    model = _build(tiny_model_dir if encoder == "bert" else distilbert_dir, pooling="mean").eval()
    inputs = {k: v for k, v in batch.items() if k != "token_type_ids"}
    assert not inputs["attention_mask"].all()  # the batch is padded
    assert model._takes_4d_mask
    with torch.no_grad():
        model._takes_4d_mask = False
        expected = model(**inputs).logits
        model._takes_4d_mask = True
        reads = []
        for name in ("__bool__", "item"):
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(
                torch.Tensor,
                name,
                lambda self, *a, _o=original, _n=name: reads.append(_n) or _o(self, *a),
            )
        logits = model(**inputs).logits
        monkeypatch.undo()
    assert reads == []
    torch.testing.assert_close(logits, expected)
    # Without the 4D mask transformers reads the mask once: the check above can fail.
    model._takes_4d_mask = False
    reads.clear()
    original = torch.Tensor.__bool__
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda self: reads.append(1) or original(self))
    with torch.no_grad():
        model(**inputs)
    monkeypatch.undo()
    assert reads


def test_a_search_prepares_its_start_without_transformers_modeling_code(
    write_tiny_space, tiny_model_dir, tiny_csv, tmp_path
):
    """What a search reads before its trials exist (the model's path, length limit, layers and
    size; the tokenized data) comes from configs and tokenizers: importing transformers'
    modeling code takes seconds that would delay the first trial. In a fresh process, since
    this one has imported everything."""
    import subprocess
    import sys

    space_file = write_tiny_space(tmp_path, tiny_model_dir, tiny_csv)
    code = f"""
import json, sys
from pathlib import Path
from sentune import search, space
from sentune.search import driver
spec = space.load(Path({str(space_file)!r}))
prepared = driver._prepare(spec, search.SearchOptions(cache_dir=Path({str(tmp_path)!r})))
print(json.dumps([len(prepared.data.train), sorted(
    m for m in ("sentune.train.model", "transformers.modeling_utils") if m in sys.modules)]))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    n_train, imported = json.loads(out.strip().splitlines()[-1])
    assert n_train > 0
    assert imported == []
