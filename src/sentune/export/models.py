"""Write the exported model in each format and check each against PyTorch (parity)."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentune.data import PreparedData
from sentune.data.batching import pad_batch
from sentune.errors import ExportError
from sentune.export.common import (
    CHECKPOINT_SKIP,
    PARITY_ATOL,
    PT2_FILE,
    ExportOptions,
    Winner,
)
from sentune.serve.engines import (
    Engine,
    LogitsOnly,
    dynamic_shapes,
    export_sample,
    quiet,
    session_engine,
    write_int8,
    write_onnx,
)
from sentune.serve.onnx import INT8_FILE, ONNX_FILE, TOKENIZER_FILE
from sentune.train.model import load_model

log = logging.getLogger(__name__)

#: The export's modeling file, a verbatim copy of `hf_modeling.py` (read as a file, never imported
#: by sentune): what `trust_remote_code=True` runs where sentune is not installed.
MODELING_FILE = "modeling_sentune.py"
_MODELING_TEMPLATE = Path(__file__).with_name("hf_modeling.py")
#: `config.json`'s `auto_map`: the Auto classes that load the export through `MODELING_FILE`.
AUTO_MAP = {
    "AutoConfig": "modeling_sentune.SentimentConfig",
    "AutoModelForSequenceClassification": "modeling_sentune.SentimentModel",
}
_TOKENIZER_CONFIG = "tokenizer_config.json"
#: The side a transformers tokenizer cuts from, by the trial's truncation; `head_tail` has none
#: (the tokenizer then keeps the head, and the card says so).
_TRUNCATION_SIDE = {"head": "right", "tail": "left", "head_tail": "right"}

# --- writing and checking the models ---------------------------------------------------------


def write_models(
    winner: Winner,
    data: PreparedData,
    folder: Path,
    formats: tuple[str, ...],
    options: ExportOptions,
    threads: int,
    *,
    base_model: str,
    temperature: float = 1.0,
) -> tuple[dict[str, Engine], dict[str, Any]]:
    """Write each format into `folder`, check it against PyTorch; return the runnable engines.
    The model's logits are divided by `temperature` (`calibrate.py`) in every format."""
    from transformers.utils import logging as hf_logging

    # Bars for loading and saving a few weights would only clutter the export's log.
    hf_logging.disable_progress_bar()
    model = load_model(winner.checkpoint).eval()
    model.config.temperature = temperature
    _make_portable(model, base_model)
    # The tokenizer travels in every export: `sentune predict` needs it.
    for item in winner.checkpoint.iterdir():
        if item.is_file() and item.name not in CHECKPOINT_SKIP:
            shutil.copy2(item, folder / item.name)
    if not (folder / TOKENIZER_FILE).is_file():
        raise ExportError(
            f"{winner.checkpoint}: has no {TOKENIZER_FILE} (a fast tokenizer is needed for "
            "onnxruntime inference); use a model with a fast tokenizer"
        )
    wrapper = LogitsOnly(model).eval()
    probe = _parity_batches(winner.truncated(data.validation), data.pad_id, options.parity_texts)

    pytorch = torch_engine(wrapper)
    engines: dict[str, Engine] = {"pytorch": pytorch}
    reference = [pytorch(*batch) for batch in probe]
    parity: dict[str, Any] = {"texts": sum(len(b[0]) for b in probe), "atol": PARITY_ATOL}
    if "hf" in formats:
        parity["hf"] = _write_hf(model, folder, probe, reference, winner)
    if "onnx" in formats:
        write_onnx(wrapper, folder / ONNX_FILE, probe[0])
        engines["onnx"] = session_engine(folder / ONNX_FILE, threads)
        parity["onnx"] = _check_parity("onnx", engines["onnx"], probe, reference, strict=True)
    if "int8" in formats:
        write_int8(folder / ONNX_FILE, folder / INT8_FILE)
        engines["int8"] = session_engine(folder / INT8_FILE, threads)
        parity["int8"] = _check_parity("int8", engines["int8"], probe, reference, strict=False)
    if "pt2" in formats:
        program = _write_pt2(wrapper, folder / PT2_FILE, probe[0])
        parity["pt2"] = _check_parity(
            "pt2", _program_engine(program), probe, reference, strict=True
        )
    return engines, parity


def torch_engine(wrapper: LogitsOnly) -> Engine:
    """A PyTorch model as an engine: numpy ids and mask in, numpy logits out, no autograd."""

    def engine(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return wrapper(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()

    return engine


def _make_portable(model, base_model: str) -> None:
    """Name the base model instead of the folders it was loaded from on the training machine:
    `config.json` (`_name_or_path`, the nested encoder's too) must not hold local paths."""
    model.config.name_or_path = base_model
    if model.config.encoder is not None:
        model.config.encoder = {**model.config.encoder, "_name_or_path": base_model}


def _write_hf(model, folder: Path, probe, reference, winner: Winner) -> dict[str, Any]:
    """Save the Hugging Face folder, loadable by transformers alone (`MODELING_FILE`, `auto_map`,
    the tokenizer cutting at the trial's `max_length`), load it back as a user would, with
    sentune's class and with the folder's own file, and compare the logits."""
    from transformers import AutoModelForSequenceClassification

    model.config.auto_map = AUTO_MAP
    model.save_pretrained(folder)
    shutil.copyfile(_MODELING_TEMPLATE, folder / MODELING_FILE)
    _set_tokenizer_truncation(folder, winner)
    loaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    worst = _max_abs_diff(loaded, probe, reference)
    if worst != 0.0:
        raise ExportError(
            f"the saved Hugging Face model does not reproduce the checkpoint's logits (max "
            f"difference {worst:.3g}); this is a bug, please report it"
        )
    standalone = _standalone_model_class(folder / MODELING_FILE).from_pretrained(folder).eval()
    standalone_worst = _max_abs_diff(standalone, probe, reference)
    if standalone_worst > PARITY_ATOL:
        raise ExportError(
            f"{MODELING_FILE} does not reproduce the checkpoint's logits (max difference "
            f"{standalone_worst:.3g}, allowed {PARITY_ATOL:g}): sentune.export.hf_modeling no "
            "longer matches sentune.train.model; this is a bug, please report it"
        )
    return {"max_abs_diff": worst, "standalone_max_abs_diff": standalone_worst}


def _max_abs_diff(model, probe, reference) -> float:
    worst = 0.0
    with torch.inference_mode():
        for (input_ids, mask), expected in zip(probe, reference, strict=True):
            got = model(
                input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask)
            ).logits.numpy()
            worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def _standalone_model_class(path: Path):
    """The model class of the export's modeling file, imported from the file itself (as
    transformers would, but without copying it into the Hugging Face modules cache)."""
    spec = importlib.util.spec_from_file_location(f"sentune_export_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    # transformers makes configs dataclasses, and dataclasses look their module up by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.SentimentModel


def _set_tokenizer_truncation(folder: Path, winner: Winner) -> None:
    """Make `truncation=True` of a transformers tokenizer (a pipeline's too) cut as the trial
    did: at its `max_length`, from the end (`head`) or the start (`tail`) of the text."""
    path = folder / _TOKENIZER_CONFIG
    settings = json.loads(path.read_text()) if path.is_file() else {}
    settings["model_max_length"] = winner.max_length
    settings["truncation_side"] = _TRUNCATION_SIDE[winner.truncation]
    path.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")


def _write_pt2(wrapper, path: Path, batch):
    with quiet("torch.export", "torch._dynamo"):
        program = torch.export.export(
            wrapper, export_sample(batch), dynamic_shapes=dynamic_shapes(wrapper)
        )
    torch.export.save(program, str(path))
    log.info("torch.export program written: %s", path)
    return program


def _program_engine(program) -> Engine:
    module = program.module()

    def engine(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()

    return engine


def _check_parity(name, engine: Engine, probe, reference, *, strict: bool) -> dict[str, Any]:
    """Max |logit difference| and label agreement with PyTorch; `strict` fails beyond the bound."""
    worst, same, total = 0.0, 0, 0
    for batch, expected in zip(probe, reference, strict=True):
        got = engine(*batch)
        worst = max(worst, float(np.abs(got - expected).max()))
        same += int((got.argmax(-1) == expected.argmax(-1)).sum())
        total += len(expected)
    result = {"max_abs_diff": worst, "label_agreement": same / total}
    if strict and (worst > PARITY_ATOL or same != total):
        raise ExportError(
            f"{name} export does not match PyTorch on {total} validation texts: max logit "
            f"difference {worst:.3g} (allowed {PARITY_ATOL:g}), {total - same} labels differ; "
            "nothing was written"
        )
    log.info("%s parity: max |diff| %.3g, labels agree %.2f%%", name, worst, 100 * same / total)
    return result


def _parity_batches(ids: list[np.ndarray], pad_id: int, n: int):
    ids = ids[:n]
    return [pad_batch(ids[i : i + 32], pad_id=pad_id) for i in range(0, len(ids), 32)]
