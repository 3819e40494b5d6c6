"""Write the exported model in each format and check each against PyTorch (parity)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentune.batching import pad_batch
from sentune.data import PreparedData
from sentune.errors import ExportError
from sentune.export.common import (
    CHECKPOINT_SKIP,
    ONNX_OPSET,
    PARITY_ATOL,
    PT2_FILE,
    Engine,
    ExportOptions,
    Winner,
    quiet,
)
from sentune.model import load_model
from sentune.predict import (
    INT8_FILE,
    ONNX_FILE,
    ONNX_INPUTS,
    TOKENIZER_FILE,
    build_session,
    import_onnxruntime,
    run_session,
)

log = logging.getLogger(__name__)

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
) -> tuple[dict[str, Engine], dict[str, Any]]:
    """Write each format into `folder`, check it against PyTorch; return the runnable engines."""
    from transformers.utils import logging as hf_logging

    # Bars for loading and saving a few weights would only clutter the export's log.
    hf_logging.disable_progress_bar()
    model = load_model(winner.checkpoint).eval()
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
    wrapper = _LogitsOnly(model).eval()
    probe = _parity_batches(winner.truncated(data.validation), data.pad_id, options.parity_texts)

    def pytorch(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return wrapper(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()

    engines: dict[str, Engine] = {"pytorch": pytorch}
    reference = [pytorch(*batch) for batch in probe]
    parity: dict[str, Any] = {"texts": sum(len(b[0]) for b in probe), "atol": PARITY_ATOL}
    if "hf" in formats:
        parity["hf"] = _write_hf(model, folder, probe, reference)
    if "onnx" in formats:
        _write_onnx(wrapper, folder / ONNX_FILE, probe[0])
        engines["onnx"] = _session_engine(folder / ONNX_FILE, threads)
        parity["onnx"] = _check_parity("onnx", engines["onnx"], probe, reference, strict=True)
    if "int8" in formats:
        _write_int8(folder / ONNX_FILE, folder / INT8_FILE)
        engines["int8"] = _session_engine(folder / INT8_FILE, threads)
        parity["int8"] = _check_parity("int8", engines["int8"], probe, reference, strict=False)
    if "pt2" in formats:
        program = _write_pt2(wrapper, folder / PT2_FILE, probe[0])
        parity["pt2"] = _check_parity(
            "pt2", _program_engine(program), probe, reference, strict=True
        )
    return engines, parity


def _make_portable(model, base_model: str) -> None:
    """Name the base model instead of the folders it was loaded from on the training machine:
    `config.json` (`_name_or_path`, the nested encoder's too) must not hold local paths."""
    model.config.name_or_path = base_model
    if model.config.encoder is not None:
        model.config.encoder = {**model.config.encoder, "_name_or_path": base_model}


def _write_hf(model, folder: Path, probe, reference) -> dict[str, Any]:
    """Save the Hugging Face folder, load it back as a user would and compare the logits."""
    from transformers import AutoModelForSequenceClassification

    model.save_pretrained(folder)
    loaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    worst = 0.0
    with torch.inference_mode():
        for (input_ids, mask), expected in zip(probe, reference, strict=True):
            got = loaded(
                input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask)
            ).logits.numpy()
            worst = max(worst, float(np.abs(got - expected).max()))
    if worst != 0.0:
        raise ExportError(
            f"the saved Hugging Face model does not reproduce the checkpoint's logits (max "
            f"difference {worst:.3g}); this is a bug, please report it"
        )
    return {"max_abs_diff": worst}


class _LogitsOnly(torch.nn.Module):
    """The model as exporters want it: two tensors in, the logits tensor out."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits


def _dynamic_shapes(wrapper) -> dict[str, dict[int, Any]]:
    positions = (wrapper.inner.config.encoder or {}).get("max_position_embeddings", 512)
    batch = torch.export.Dim("batch", min=1, max=4096)
    sequence = torch.export.Dim("sequence", min=1, max=int(positions))
    return {name: {0: batch, 1: sequence} for name in ONNX_INPUTS}


def _export_sample(batch: tuple[np.ndarray, np.ndarray]):
    """Two rows of at least 3 tokens: sizes 0, 1 and 2 would be specialised by torch.export."""
    input_ids, mask = batch
    input_ids, mask = input_ids[:2], mask[:2]
    if input_ids.shape[1] < 3:
        input_ids = np.pad(input_ids, ((0, 0), (0, 3 - input_ids.shape[1])))
        mask = np.pad(mask, ((0, 0), (0, 3 - mask.shape[1])))
    if len(input_ids) < 2:
        input_ids, mask = np.repeat(input_ids, 2, axis=0), np.repeat(mask, 2, axis=0)
    return torch.from_numpy(input_ids), torch.from_numpy(mask)


def _write_onnx(wrapper, path: Path, batch) -> None:
    started = time.perf_counter()
    try:
        with quiet("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir"):
            torch.onnx.export(
                wrapper,
                _export_sample(batch),
                str(path),
                dynamo=True,
                input_names=list(ONNX_INPUTS),
                output_names=["logits"],
                dynamic_shapes=_dynamic_shapes(wrapper),
                opset_version=ONNX_OPSET,
                external_data=False,
                verbose=False,
            )
    except ImportError as exc:
        raise ExportError(
            f"ONNX export needs onnx and onnxscript ({exc}); pip install 'sentune[export]'"
        ) from None
    log.info("ONNX model written in %.1f s: %s", time.perf_counter() - started, path)


def _write_int8(source: Path, target: Path) -> None:
    import_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic advises pre-processing on the root logger at every call; nothing to act on.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    log.info("int8 model written: %s", target)


def _write_pt2(wrapper, path: Path, batch):
    with quiet("torch.export", "torch._dynamo"):
        program = torch.export.export(
            wrapper, _export_sample(batch), dynamic_shapes=_dynamic_shapes(wrapper)
        )
    torch.export.save(program, str(path))
    log.info("torch.export program written: %s", path)
    return program


def _session_engine(path: Path, threads: int) -> Engine:
    session = build_session(path, threads=threads)

    def engine(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return run_session(session, input_ids, attention_mask)

    return engine


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
