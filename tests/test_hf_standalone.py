"""The export's Hugging Face folder without sentune: `modeling_sentune.py` and `auto_map` load it
with `trust_remote_code=True`, and it answers as `sentune predict` does; the temperature."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import LABELS, VOCAB_WORDS, make_texts
from transformers import AutoModel, DistilBertConfig

from sentune import data
from sentune.config import DataConfig, HeadConfig
from sentune.export import card
from sentune.export.common import ExportOptions, Winner
from sentune.export.models import AUTO_MAP, MODELING_FILE, write_models
from sentune.serve import predict
from sentune.train.encoders import load_tokenizer
from sentune.train.model import SentimentModel, build_model, load_model

TEMPLATE = Path(__file__).resolve().parents[1] / "src" / "sentune" / "export" / "hf_modeling.py"
MAX_LENGTH = 10
#: The export's temperature, not 1: every format must carry it.
TEMPERATURE = 1.7
#: Clean texts (`sentune predict` cleans, a pipeline does not), some longer than MAX_LENGTH.
TEXTS = [
    *make_texts(6, seed=3)["text"],
    " ".join(VOCAB_WORDS[i % len(VOCAB_WORDS)] for i in range(25)),
    "love it",
]


def _standalone():
    """The template module, imported from its file as transformers imports the export's copy."""
    spec = importlib.util.spec_from_file_location("modeling_sentune_under_test", TEMPLATE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # configs are dataclasses, which look their module up
    spec.loader.exec_module(module)
    return module


def _winner(checkpoint: Path, truncation: str) -> Winner:
    return Winner(
        trial_id="t0",
        rank=1,
        checkpoint=checkpoint,
        params={},
        val_macro_f1=0.0,
        best_epoch=1.0,
        max_length=MAX_LENGTH,
        truncation=truncation,
    )


@pytest.fixture(scope="module", params=["head", "tail"])
def hf_export(request, tiny_model_dir, tiny_csv, tmp_path_factory) -> Path:
    """An export folder as `sentune export` writes it (HF and ONNX, by `write_models`), of a
    tiny checkpoint with a mean-pooled two-layer head, at temperature TEMPERATURE; `export.json`
    by hand."""
    root = tmp_path_factory.mktemp(f"standalone-{request.param}")
    checkpoint = root / "checkpoint"
    torch.manual_seed(0)
    model = build_model(
        str(tiny_model_dir),
        HeadConfig(pooling="mean", layers=2, width=16, activation="tanh"),
        label_names=list(LABELS),
    )
    with torch.no_grad():  # decisive: with the usual small weights every text is ~1/3 a class
        for layer in model.head:
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.normal_(layer.weight, std=1.0)
    model.save_pretrained(checkpoint)
    load_tokenizer(str(tiny_model_dir)).save_pretrained(checkpoint)
    prepared = data.prepare(
        DataConfig(dataset=str(tiny_csv)), str(tiny_model_dir), cache_dir=root / "cache"
    )
    winner = _winner(checkpoint, request.param)
    folder = root / "export"
    folder.mkdir()
    options = ExportOptions(parity_texts=32, threads=1)
    write_models(
        winner,
        prepared,
        folder,
        ("hf", "onnx"),
        options,
        1,
        base_model="tiny-bert",
        temperature=TEMPERATURE,
    )
    # The fields `serve.predict` reads (export.json is written by `export_winner`).
    manifest = {
        "labels": list(prepared.label_names),
        "max_length": MAX_LENGTH,
        "truncation": request.param,
        "pad_id": prepared.pad_id,
    }
    (folder / predict.EXPORT_MANIFEST).write_text(json.dumps(manifest))
    return folder


#: Run in a Python that cannot import sentune (argv: the export folder, the texts as JSON, the
#: card's code): it runs the card's code, then prints the pipeline's and the Auto model's label
#: probabilities of the texts, and what it loaded, as JSON.
_WITHOUT_SENTUNE = """
import sys
sys.modules["sentune"] = None  # before anything: no sentune in this process
try:
    import sentune
except ImportError:
    pass
else:
    raise SystemExit("sentune is importable")
import json
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

folder, texts, card_code = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
exec(card_code, {})  # the model card's transformers snippets, as a reader would run them
classify = pipeline(
    "text-classification", model=folder, trust_remote_code=True, truncation=True, top_k=None
)
piped = [{row["label"]: row["score"] for row in rows} for rows in classify(texts)]
model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
# The tokenizer reads config.json too, whose auto_map would otherwise ask on the terminal.
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
batch = tokenizer(texts, truncation=True, padding=True, return_tensors="pt")
with torch.inference_mode():
    probabilities = model(**batch).logits.softmax(-1).tolist()
print(json.dumps({
    "pipeline": piped,
    "auto": probabilities,
    "id2label": {int(k): v for k, v in model.config.id2label.items()},
    "label2id": model.config.label2id,
    "temperature": model.config.temperature,
    "model_module": type(model).__module__,
    "sentune_loaded": sorted(m for m in sys.modules if m.startswith("sentune") and sys.modules[m]),
}))
"""


def _untruncated(folder: Path, texts: list[str]) -> list[list[int]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / predict.TOKENIZER_FILE))
    tokenizer.no_truncation()
    return [enc.ids for enc in tokenizer.encode_batch(texts)]


def _card_code(folder: Path, truncation: str) -> str:
    """The Python blocks of the model card's transformers usage, for this export folder."""
    winner = _winner(folder.parent / "checkpoint", truncation)
    text = "\n".join(card._transformers_usage_lines(winner, ("hf", "onnx")))
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 2, text
    return "\n".join(blocks).replace('"EXPORT_DIR"', repr(str(folder)))


def _without_sentune(folder: Path, texts: list[str], tmp_path: Path, card_code: str) -> dict:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_MODULES_CACHE": str(tmp_path / "hf-modules"),
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-I", "-c", _WITHOUT_SENTUNE, str(folder), json.dumps(texts), card_code],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "custom code?" not in done.stdout  # trust_remote_code=True must not ask
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_export_loads_without_sentune_and_answers_as_sentune_predict(hf_export, tmp_path):
    config = json.loads((hf_export / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP
    assert (hf_export / MODELING_FILE).read_text() == TEMPLATE.read_text()
    tokenizer_config = json.loads((hf_export / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == MAX_LENGTH
    truncation = json.loads((hf_export / predict.EXPORT_MANIFEST).read_text())["truncation"]
    assert tokenizer_config["truncation_side"] == {"head": "right", "tail": "left"}[truncation]
    assert max(len(ids) for ids in _untruncated(hf_export, TEXTS)) > MAX_LENGTH
    expected = predict.Predictor(hf_export, threads=1).predict(TEXTS)

    got = _without_sentune(hf_export, TEXTS, tmp_path, _card_code(hf_export, truncation))

    assert got["sentune_loaded"] == []
    assert got["model_module"].endswith("modeling_sentune")
    assert got["id2label"] == {str(i): name for i, name in enumerate(expected.label_names)}
    assert got["label2id"] == {name: i for i, name in enumerate(expected.label_names)}
    assert got["temperature"] == config["temperature"] == TEMPERATURE
    names = expected.label_names
    piped = np.array([[row[name] for name in names] for row in got["pipeline"]])
    auto = np.array(got["auto"])
    for probabilities in (piped, auto):
        assert [names[i] for i in probabilities.argmax(-1)] == expected.labels
        np.testing.assert_allclose(probabilities, expected.probabilities, atol=1e-4, rtol=0)


# --- one forward in two files -----------------------------------------------------------------


@pytest.fixture(scope="module")
def distilbert_dir(tmp_path_factory) -> Path:
    """A tiny random DistilBERT: no pooler, no token_type_ids."""
    folder = tmp_path_factory.mktemp("tiny-distilbert")
    config = DistilBertConfig(
        vocab_size=64, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128
    )
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    return folder


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 30, (3, 9), generator=generator)
    mask = torch.ones_like(input_ids)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": 0 * input_ids}


HEADS = [
    ("bert", HeadConfig(pooling="cls", layers=0)),
    ("bert", HeadConfig(pooling="pooler", layers=1, activation="relu")),
    ("bert", HeadConfig(pooling="mean", layers=2, width=8, activation="tanh")),
    ("distilbert", HeadConfig(pooling="mean", layers=1, activation="gelu")),
    ("distilbert", HeadConfig(pooling="cls", layers=0)),
]


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize(("encoder", "head"), HEADS, ids=lambda x: getattr(x, "pooling", x))
def test_the_standalone_file_computes_sentunes_logits(
    encoder, head, temperature, tiny_model_dir, distilbert_dir, tmp_path
):
    """`hf_modeling.py` and `train/model.py` must not drift: same weights, same logits and loss."""
    source = {"bert": tiny_model_dir, "distilbert": distilbert_dir}[encoder]
    torch.manual_seed(0)
    model = build_model(
        str(source), head, label_names=list(LABELS), class_weights=[0.5, 1.0, 2.0]
    ).eval()
    model.config.temperature = temperature
    model.save_pretrained(tmp_path)
    standalone = _standalone().SentimentModel.from_pretrained(tmp_path).eval()
    labels = torch.tensor([0, 2, 1])
    with torch.inference_mode():
        ours, theirs = model(**_batch(), labels=labels), standalone(**_batch(), labels=labels)
    torch.testing.assert_close(theirs.logits, ours.logits, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(theirs.loss, ours.loss, atol=1e-6, rtol=1e-6)


def test_temperature_divides_the_logits_not_the_loss(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    model = build_model(str(tiny_model_dir), HeadConfig(), label_names=list(LABELS)).eval()
    model.save_pretrained(tmp_path)
    standalone = _standalone().SentimentModel.from_pretrained(tmp_path).eval()
    labels = torch.tensor([0, 2, 1])
    for each in (model, standalone):
        with torch.inference_mode():
            plain = each(**_batch(), labels=labels)
            each.config.temperature = 2.0
            tempered = each(**_batch(), labels=labels)
        torch.testing.assert_close(tempered.logits, plain.logits / 2, atol=0, rtol=0)
        assert tempered.loss == plain.loss


def test_a_checkpoint_saved_without_temperature_loads_at_one(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    model = build_model(str(tiny_model_dir), HeadConfig(), label_names=list(LABELS)).eval()
    model.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text())
    del config["temperature"]
    config_file.write_text(json.dumps(config))
    loaded = load_model(tmp_path).eval()
    assert loaded.config.temperature == 1.0
    with torch.inference_mode():
        assert torch.equal(loaded(**_batch()).logits, model(**_batch()).logits)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_a_temperature_that_is_not_positive_is_a_model_error(tiny_model_dir, temperature):
    from sentune.errors import ModelError

    model = build_model(str(tiny_model_dir), HeadConfig(), label_names=list(LABELS))
    model.config.temperature = temperature
    with pytest.raises(ModelError, match="temperature: must be a positive number"):
        SentimentModel(model.config)


def test_the_card_says_when_transformers_cannot_cut_as_training_did(tmp_path):
    def usage(truncation: str) -> str:
        return "\n".join(card._transformers_usage_lines(_winner(tmp_path, truncation), ("hf",)))

    assert "keeping its start as training did" in usage("head")
    assert "keeping its end as training did" in usage("tail")
    assert "cannot do" not in usage("head") + usage("tail")
    head_tail = usage("head_tail")
    assert "`head_tail` truncation" in head_tail and "cannot do" in head_tail
    assert f'truncate(ids, {MAX_LENGTH}, "head_tail")' in head_tail
    assert card._transformers_usage_lines(_winner(tmp_path, "head"), ("onnx",)) == []
