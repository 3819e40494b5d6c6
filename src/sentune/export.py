"""Export the winner of a run: Hugging Face folder, ONNX, int8 ONNX; scored, checked, benchmarked.

`export_winner(run_dir)` picks the best trial of the leaderboard (or the one named), loads its
best-epoch checkpoint and writes `analysis/<run>/export/`:

- `config.json`, `model.safetensors` and the tokenizer files (loads back with identical logits),
- `model.onnx` (dynamic batch and sequence axes; parity with PyTorch checked on validation texts),
- `model.int8.onnx` (dynamic int8 weight quantization; its macro-F1 drop is reported),
- `model.pt2` (a `torch.export` program) on request,
- `metrics.json` (every format scored on the validation and the held-out test split),
- `benchmark.json` (latency at batch 1 and throughput at batch 32 of each format),
- `README.md`, the model card, and `export.json`, what `sentune predict` reads.

Everything is written into a temporary folder beside the target and renamed at the end, so a
failed export leaves nothing half-written.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from sentune import config, runs
from sentune.analysis import Confirmation, confirmation, format_mean_std, leaderboard
from sentune.batching import pad_batch, sorted_batches
from sentune.data import PreparedData, Split
from sentune.errors import ExportError, RunError
from sentune.evaluate import FLOOR_METHOD, bootstrap_interval, floor_scores, split_scores
from sentune.model import HUB_IDS, LICENSES, load_model
from sentune.predict import (
    EXPORT_MANIFEST,
    INT8_FILE,
    ONNX_FILE,
    ONNX_INPUTS,
    TOKENIZER_FILE,
    build_session,
    import_onnxruntime,
    run_session,
)
from sentune.runs import Manifest, Run

log = logging.getLogger(__name__)

FORMATS = ("hf", "onnx", "int8", "pt2")
DEFAULT_FORMATS = ("hf", "onnx", "int8")
EXPORT_DIR = "export"
METRICS_FILE = "metrics.json"
BENCHMARK_FILE = "benchmark.json"
CARD_FILE = "README.md"
PT2_FILE = "model.pt2"
#: onnxruntime runs opset 18 everywhere it is still supported.
ONNX_OPSET = 18
#: Largest allowed |logit difference| between ONNX (or torch.export) and PyTorch.
PARITY_ATOL = 1e-4
#: Names of the scored and benchmarked formats, in table order.
ENGINES = ("pytorch", "onnx", "int8")
#: Checkpoint files not copied as they are: the weights and config are saved anew, the trial's
#: state and the optimizer state of an interrupted run are training's business, not a model's.
_CHECKPOINT_SKIP = (
    runs.MODEL_CONFIG_FILE,
    "model.safetensors",
    runs.STATE_FILE,
    runs.TRAINING_STATE_FILE,
)
#: Bootstrap resamples and seed of the test scores' 95 % intervals.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
#: The test metrics given with an interval, beside the TF-IDF floor's.
INTERVAL_METRICS = (config.MACRO_F1, config.ACCURACY)
_EVAL_BATCH = 64
TOKENIZATION_NOTE = (
    "excluded: inputs are tokenized and padded before timing, for every format alike"
)


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how to check it.

    Attributes:
        trial: A trial id to export instead of the leaderboard's best.
        formats: Any of `FORMATS` (`hf`, `onnx`, `int8`, `pt2`); `int8` needs `onnx`.
        force: Replace an existing export.
        threads: Intra-op threads of PyTorch and onnxruntime (None: the CPU count).
        parity_texts: Validation texts the ONNX parity check runs on.
        latency_runs: Timed batch-1 calls per format.
        throughput_batches: Timed batch-32 calls per format.
        warmup: Untimed calls before each timing.
        cache_dir: Token id cache of `data.prepare`.
    """

    trial: str | None = None
    formats: tuple[str, ...] = DEFAULT_FORMATS
    force: bool = False
    threads: int | None = None
    parity_texts: int = 256
    latency_runs: int = 100
    throughput_batches: int = 20
    warmup: int = 5
    cache_dir: Path = Path(config.CACHE_DIR)


@dataclass(frozen=True)
class Winner:
    """The trial that is exported and its best epoch's checkpoint.

    After a confirmation over seeds, `trial_id` is the search trial of the configuration with
    the best mean, and the checkpoint is that of its best seed (the search trial's or a
    confirmation trial's); `confirmed` holds the seeds' scores.
    """

    trial_id: str
    rank: int
    checkpoint: Path
    params: dict[str, Any]
    val_macro_f1: float
    best_epoch: float
    max_length: int
    #: How the trial cut longer texts (`config.TRUNCATIONS`); serving cuts the same way.
    truncation: str = "head"
    #: The configuration's validation macro-F1 per seed (None: not confirmed over seeds).
    confirmed: dict[int, float] | None = None

    @property
    def confirmed_line(self) -> str:
        """`0.7012 ± 0.0040 over 2 seeds (0, 1)`, or "" when not confirmed."""
        if not self.confirmed:
            return ""
        return format_mean_std(list(self.confirmed.values())) + (
            f" over {len(self.confirmed)} seeds ({', '.join(map(str, self.confirmed))})"
        )

    def truncated(self, split: Split) -> list[np.ndarray]:
        """The token ids of `split` cut as the trial cut them."""
        return split.truncated(self.max_length, self.truncation)


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what was measured."""

    path: Path
    winner: Winner
    metrics: dict[str, Any]
    benchmark: dict[str, Any]


#: `logits(input_ids, attention_mask)` of one padded int64 batch, as float32 numpy.
Engine = Callable[[np.ndarray, np.ndarray], np.ndarray]


def export_winner(
    run_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    analysis_root: str | Path = Path(config.ANALYSIS_DIR),
    options: ExportOptions = ExportOptions(),
) -> ExportResult:
    """Export, check, score and benchmark the winner (or `options.trial`) of a run.

    Args:
        run_dir: `trials/<run>`.
        out_dir: The export folder (default: `<analysis_root>/<run>/export`).
        analysis_root: The folder of derived results.
        options: Formats, trial, overwrite, threads and check sizes.

    Returns:
        The export folder, the exported trial, `metrics.json` and `benchmark.json` contents.

    Raises:
        RunError: The run has no finished trial, or `options.trial` is not one of its trials.
        ExportError: The export exists (without `force`), or a parity check fails.
        RunError: The data no longer matches the run's fingerprint.
    """
    formats = _check_formats(options.formats)
    if {"onnx", "int8"} & set(formats):
        import_onnxruntime()
    run = runs.open_run(run_dir)
    winner = select_winner(run, options.trial)
    out = Path(out_dir) if out_dir else Path(analysis_root) / run.path.name / EXPORT_DIR
    _check_target(out, force=options.force)
    data = _load_data(run, winner, cache_dir=options.cache_dir)
    threads = options.threads or os.cpu_count() or 1

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        engines, parity = _write_models(
            winner, data, tmp, formats, options, threads, base_model=base_model_id(run.manifest)
        )
        metrics = _score(engines, data, winner, run, parity)
        benchmark = _benchmark(engines, data, winner, threads, options)
        _write_json(tmp / METRICS_FILE, metrics)
        _write_json(tmp / BENCHMARK_FILE, benchmark)
        _write_json(tmp / EXPORT_MANIFEST, _export_manifest(run, winner, data, formats))
        (tmp / CARD_FILE).write_text(_model_card(run, winner, metrics, benchmark, formats))
        _move_into_place(tmp, out)
    finally:
        torch.set_num_threads(previous_threads)
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("export of trial %s written to %s", winner.trial_id, out)
    return ExportResult(out, winner, metrics, benchmark)


def select_winner(run: Run, trial: str | None = None) -> Winner:
    """The configuration with the best mean over the confirmation seeds (its best seed's
    checkpoint), else the leaderboard's best trial with a checkpoint, or the trial named `trial`.

    Raises:
        RunError: No trial has a finished evaluation with a checkpoint, or `trial` is unknown.
    """
    table = leaderboard(run)
    confirmed = confirmation(run, table) if trial is None else None
    best_seed = confirmed.winner_seed() if confirmed is not None else None
    if best_seed is not None and best_seed["checkpoint"]:
        return _confirmed_winner(run, table, confirmed, best_seed)
    ready = table[table[config.OBJECTIVE].notna() & (table["checkpoint"] != "")]
    if trial is not None:
        chosen = table[table["trial_id"] == trial]
        if chosen.empty:
            known = ", ".join(table["trial_id"]) or "none"
            raise RunError(f"{run.path}: no trial {trial!r}; its trials are: {known}")
        if chosen.index[0] not in ready.index:
            raise RunError(
                f"{run.path}: trial {trial!r} has no checkpoint of a finished evaluation; pick "
                f"one of: {', '.join(ready['trial_id']) or 'none (wait for the search)'}"
            )
        row = chosen.iloc[0]
    elif ready.empty:
        raise RunError(
            f"{run.path}: no trial has finished an evaluation with a checkpoint "
            f"({len(table)} trials); wait for the search to report, or resume it"
        )
    else:
        row = ready.iloc[0]
    params = run.params[row["trial_id"]]
    train = config.build_section("train", params)
    return Winner(
        trial_id=str(row["trial_id"]),
        rank=int(row.name) + 1,
        checkpoint=Path(row["checkpoint"]),
        params=params,
        val_macro_f1=float(row[config.OBJECTIVE]),
        best_epoch=float(row["best_epoch"]),
        max_length=int(train.max_length),
        truncation=train.truncation,
    )


def _confirmed_winner(
    run: Run, table: pd.DataFrame, confirmed: Confirmation, best_seed: pd.Series
) -> Winner:
    seeds = confirmed.table[confirmed.table["trial_id"] == confirmed.winner]
    params = {**run.params[confirmed.winner], runs.SEED_KEY: int(best_seed["seed"])}
    train = config.build_section("train", params)
    return Winner(
        trial_id=str(confirmed.winner),
        rank=int(best_seed["rank"]),
        checkpoint=Path(best_seed["checkpoint"]),
        params=params,
        val_macro_f1=float(best_seed[config.OBJECTIVE]),
        best_epoch=float(best_seed["best_epoch"]),
        max_length=int(train.max_length),
        truncation=train.truncation,
        confirmed={int(r["seed"]): float(r[config.OBJECTIVE]) for _, r in seeds.iterrows()},
    )


def format_benchmark(benchmark: dict[str, Any]) -> str:
    """The benchmark as a Markdown table (also readable as plain text)."""
    lines = [
        "| format | batch 1 p50 (ms) | batch 1 p95 (ms) | batch 32 (texts/s) | vs PyTorch |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in benchmark["results"].items():
        lines.append(
            f"| {name} | {row['b1_p50_ms']:.2f} | {row['b1_p95_ms']:.2f} | "
            f"{row['b32_texts_per_s']:.1f} | {row['b32_speedup_vs_pytorch']:.2f}x |"
        )
    return "\n".join(lines)


def format_scores(metrics: dict[str, Any]) -> str:
    """Validation and test scores of each format as a Markdown table."""
    lines = [
        "| format | val macro-F1 | test macro-F1 | test weighted F1 | test accuracy | val→test |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    weighted = config.metric_name(config.TEST, config.F1_WEIGHTED)
    accuracy = config.metric_name(config.TEST, config.ACCURACY)
    for name, splits in metrics["formats"].items():
        val_f1, test_f1 = _f1(splits, "validation"), _f1(splits, "test")
        test = splits["test"]
        lines.append(
            f"| {name} | {val_f1:.4f} | {test_f1:.4f} | {test[weighted]:.4f} | "
            f"{test[accuracy]:.4f} | {test_f1 - val_f1:+.4f} |"
        )
    return "\n".join(lines)


# --- checks before any work ------------------------------------------------------------------


def _check_formats(formats: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    if "torchscript" in chosen:
        raise ExportError(
            "--formats torchscript: TorchScript is deprecated in torch 2.x; use pt2 "
            "(a torch.export program, model.pt2)"
        )
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise ExportError(
            f"--formats {','.join(formats)}: unknown {', '.join(unknown) or 'empty list'}; "
            f"use a comma-separated subset of {','.join(FORMATS)}"
        )
    if "int8" in chosen and "onnx" not in chosen:
        raise ExportError("--formats: int8 is quantized from the ONNX model; add onnx")
    return chosen


def _check_target(out: Path, *, force: bool) -> None:
    if out.exists() and not force:
        raise ExportError(f"{out}: an export is already there; pass --force to replace it")


def _load_data(run: Run, winner: Winner, *, cache_dir: Path) -> PreparedData:
    """The run's data rebuilt from its manifest, checked against the recorded fingerprint."""
    # The checkpoint holds the same tokenizer; it serves when the base model folder is gone.
    model_path = run.manifest.model_path
    tokenizer = model_path if Path(model_path).is_dir() else str(winner.checkpoint)
    return runs.load_data(run.manifest, cache_dir=cache_dir, tokenizer=tokenizer)


# --- writing and checking the models ---------------------------------------------------------


def _write_models(
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
        if item.is_file() and item.name not in _CHECKPOINT_SKIP:
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
        with _quiet("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir"):
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
    with _quiet("torch.export", "torch._dynamo"):
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


# --- scoring ---------------------------------------------------------------------------------


def _predict_split(engine: Engine, split: Split, ids: list[np.ndarray], pad_id: int) -> np.ndarray:
    preds = np.empty(len(split), dtype=np.int64)
    for indices in sorted_batches(split.lengths, _EVAL_BATCH):
        input_ids, mask = pad_batch([ids[i] for i in indices], pad_id=pad_id)
        preds[indices] = engine(input_ids, mask).argmax(-1)
    return preds


def _score(
    engines: dict[str, Engine],
    data: PreparedData,
    winner: Winner,
    run: Run,
    parity: dict[str, Any],
) -> dict[str, Any]:
    """Every format on validation and on the held-out test split the search never saw."""
    names = list(data.label_names)
    formats: dict[str, Any] = {}
    test_preds: dict[str, np.ndarray] = {}
    for name, engine in engines.items():
        started = time.perf_counter()
        formats[name] = {}
        for split_name, prefix, split in _scored_splits(data):
            preds = _predict_split(engine, split, winner.truncated(split), data.pad_id)
            formats[name][split_name] = split_scores(split.labels, preds, names, split=prefix)
            if prefix == config.TEST:
                test_preds[name] = preds
        log.info(
            "%s: test macro-F1 %.4f (validation %.4f), scored in %.1f s",
            name,
            _f1(formats[name], "test"),
            _f1(formats[name], "validation"),
            time.perf_counter() - started,
        )
    gap = {name: _f1(f, "test") - _f1(f, "validation") for name, f in formats.items()}
    metrics: dict[str, Any] = {
        "run": run.path.name,
        "trial_id": winner.trial_id,
        "leaderboard_rank": winner.rank,
        "best_epoch": winner.best_epoch,
        "max_length": winner.max_length,
        "truncation": winner.truncation,
        "labels": names,
        "data_fingerprint": data.fingerprint,
        "search_val_macro_f1": winner.val_macro_f1,
        # Per seed of the winning configuration (`confirm.csv`); null when not confirmed.
        "confirmed_val_macro_f1": winner.confirmed,
        "note": (
            "validation and test are scored here in fp32; search_val_macro_f1 is what the trial "
            "reported during the search (in its training precision)"
        ),
        "formats": formats,
        "val_to_test_gap_macro_f1": gap,
        "parity": parity,
        "test_intervals": _intervals(data.test.labels, test_preds["pytorch"], len(names)),
        "floor": _test_floor(data),
    }
    if "int8" in formats:
        base = _f1(formats["pytorch"], "test")
        metrics["int8_test_macro_f1_drop"] = base - _f1(formats["int8"], "test")
    return metrics


def _intervals(labels: np.ndarray, preds: np.ndarray, num_labels: int) -> dict[str, Any]:
    """Bootstrap 95 % intervals of the test metrics in `INTERVAL_METRICS`, by metric name."""
    return {
        config.metric_name(config.TEST, metric): bootstrap_interval(
            labels, preds, metric, n=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED, num_labels=num_labels
        )._asdict()
        for metric in INTERVAL_METRICS
    }


def _test_floor(data: PreparedData) -> dict[str, Any]:
    """The TF-IDF floor trained on the train split and scored on the test split, with intervals.

    Only here does the floor see the test split: it puts the winner's test scores in context.
    """
    scores, preds = floor_scores(data, split=config.TEST)
    kept = [config.metric_name(config.TEST, m) for m in (*INTERVAL_METRICS, config.F1_WEIGHTED)]
    return {
        "method": FLOOR_METHOD,
        "train_size": len(data.train),
        "n": scores["n"],
        **{key: scores[key] for key in kept},
        "intervals": _intervals(data.test.labels, preds, len(data.label_names)),
    }


def format_intervals(metrics: dict[str, Any]) -> str:
    """The winner's and the TF-IDF floor's test scores with their 95 % intervals (Markdown)."""
    keys = [config.metric_name(config.TEST, m) for m in INTERVAL_METRICS]
    pytorch, floor = metrics["formats"]["pytorch"]["test"], metrics["floor"]

    def cell(value: float, interval: dict[str, Any]) -> str:
        return f"{value:.4f} [{interval['low']:.4f}, {interval['high']:.4f}]"

    rows = [
        ("this model (PyTorch)", pytorch, metrics["test_intervals"]),
        (
            f"TF-IDF floor (trained on the same {floor['train_size']} examples)",
            floor,
            floor["intervals"],
        ),
    ]
    lines = [
        "| model | " + " | ".join(f"{k} [95 % CI]" for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for name, scores, intervals in rows:
        lines.append(
            f"| {name} | " + " | ".join(cell(scores[k], intervals[k]) for k in keys) + " |"
        )
    return "\n".join(lines)


def _scored_splits(data: PreparedData):
    """(name in metrics.json, metric prefix, split) of the scored splits."""
    return (("validation", config.VAL, data.validation), ("test", config.TEST, data.test))


def _f1(scores: dict[str, Any], split: str) -> float:
    """Macro-F1 of one format on `validation` or `test` in `metrics.json`."""
    prefix = config.VAL if split == "validation" else config.TEST
    return scores[split][config.metric_name(prefix, config.MACRO_F1)]


# --- benchmark -------------------------------------------------------------------------------


def _benchmark(
    engines: dict[str, Engine],
    data: PreparedData,
    winner: Winner,
    threads: int,
    options: ExportOptions,
) -> dict[str, Any]:
    """Latency at batch 1 and throughput at batch 32 on real test texts, after warm-up calls."""
    ids = winner.truncated(data.test)
    singles = [
        pad_batch([ids[i % len(ids)]], pad_id=data.pad_id)
        for i in range(options.warmup + options.latency_runs)
    ]
    n_batches = options.warmup + options.throughput_batches
    batches = [
        pad_batch([ids[(start + j) % len(ids)] for j in range(32)], pad_id=data.pad_id)
        for start in range(0, 32 * n_batches, 32)
    ]
    results: dict[str, dict[str, float]] = {}
    for name, engine in engines.items():
        single_ms = _timed(engine, singles, options.warmup)
        batch_ms = _timed(engine, batches, options.warmup)
        results[name] = {
            "b1_p50_ms": float(np.percentile(single_ms, 50)),
            "b1_p95_ms": float(np.percentile(single_ms, 95)),
            "b32_p50_ms": float(np.percentile(batch_ms, 50)),
            "b32_texts_per_s": 32 * len(batch_ms) / (float(np.sum(batch_ms)) / 1000),
        }
        log.info("benchmark %s: %s", name, results[name])
    for row in results.values():
        row["b32_speedup_vs_pytorch"] = (
            row["b32_texts_per_s"] / results["pytorch"]["b32_texts_per_s"]
        )
    versions = {"torch": torch.__version__}
    for package in ("onnxruntime", "onnx"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {
        "threads": threads,
        "thread_setting": "intra-op threads of PyTorch and onnxruntime (inter-op 1 for ORT)",
        "tokenization": TOKENIZATION_NOTE,
        "texts": f"test split, in split order, truncated to max_length {winner.max_length} "
        f"({winner.truncation})",
        "precision": "fp32 (PyTorch eager, ONNX); int8 weights, dynamic activations (int8)",
        "warmup_calls": options.warmup,
        "batch1_runs": options.latency_runs,
        "batch32_batches": options.throughput_batches,
        "mean_tokens_batch1": float(np.mean([m.sum() for _, m in singles[options.warmup :]])),
        "mean_tokens_batch32": float(
            np.mean([m.sum(1).mean() for _, m in batches[options.warmup :]])
        ),
        "cpu": runs.cpu_name(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "results": results,
    }


def _timed(engine: Engine, batches, warmup: int) -> np.ndarray:
    """Milliseconds of each call after the first `warmup` calls."""
    times = []
    for i, (input_ids, mask) in enumerate(batches):
        started = time.perf_counter()
        engine(input_ids, mask)
        if i >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    return np.asarray(times)


# --- writing ---------------------------------------------------------------------------------


def _export_manifest(
    run: Run, winner: Winner, data: PreparedData, formats: tuple[str, ...]
) -> dict[str, Any]:
    files = {"hf": "model.safetensors", "onnx": ONNX_FILE, "int8": INT8_FILE, "pt2": PT2_FILE}
    return {
        "run": run.path.name,
        "trial_id": winner.trial_id,
        # Relative to the run folder: an export travels to machines without the run's paths.
        "checkpoint": _relative_to(winner.checkpoint, run.path),
        "base_model": base_model_id(run.manifest),
        "labels": list(data.label_names),
        "max_length": winner.max_length,
        "truncation": winner.truncation,
        "pad_id": data.pad_id,
        "onnx_inputs": list(ONNX_INPUTS),
        "onnx_opset": ONNX_OPSET,
        "formats": {f: files[f] for f in formats},
    }


def _relative_to(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).name


def _write_json(path: Path, value: Any) -> None:
    runs.write_json(path, value)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder onto `out`; a replaced export is removed only afterwards."""
    # mkdtemp (and some writers) create private files; an export is meant to be shared.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    for item in tmp.iterdir():
        item.chmod(0o666 & ~umask)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}-old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _quiet:
    """Raise the named loggers to ERROR and mute warnings for a block (exporters are chatty)."""

    def __init__(self, *names: str):
        self.loggers = [logging.getLogger(n) for n in names]
        self.levels = [lg.level for lg in self.loggers]

    def __enter__(self):
        for lg in self.loggers:
            lg.setLevel(logging.ERROR)
        # Exporter internals warn about axis renaming and their own deprecations.
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)

    def __exit__(self, *exc):
        self.warnings.__exit__(*exc)
        for lg, level in zip(self.loggers, self.levels, strict=True):
            lg.setLevel(level)


# --- the model card --------------------------------------------------------------------------


def _model_card(
    run: Run,
    winner: Winner,
    metrics: dict[str, Any],
    benchmark: dict[str, Any],
    formats: tuple[str, ...],
) -> str:
    manifest = run.manifest
    names = metrics["labels"]
    test = metrics["formats"]["pytorch"]["test"]
    space = manifest.space
    lines = [
        "---",
        yaml.safe_dump(
            _card_metadata(run, winner, metrics, formats), sort_keys=False, allow_unicode=True
        ).rstrip(),
        "---",
        "",
        f"# Sentiment classifier — {run.path.name}, trial {winner.trial_id}",
        "",
        f"Fine-tuned with sentune from `{base_model_id(manifest)}` to classify text as "
        f"{', '.join(names)}.",
        f"Winner of the `{space.name}` search (rank {winner.rank} by best-epoch validation "
        f"macro-F1, epoch {winner.best_epoch:g}); run commit `{manifest.git_commit}`.",
        *_confirmed_lines(winner),
        "",
        "## Files",
        "",
        *_files_lines(formats),
        "",
        "## Data",
        "",
        *_data_lines(manifest),
        "",
        "## Search",
        "",
        space.description.strip(),
        "",
        f"Strategy `{manifest.strategy}`, budget: "
        + ", ".join(f"{k} {v}" for k, v in asdict(manifest.budget).items() if v is not None)
        + ".",
        "",
        "```yaml",
        portable_text(space.text).rstrip(),
        "```",
        "",
        "## Training recipe",
        "",
        "The chosen configuration and the defaults it ran with (`searched`: chosen by the "
        "search; `fixed`: set by the space; `default`: sentune's `config.py`).",
        "",
        "| key | value | from |",
        "|---|---|---|",
        *(f"| `{key}` | {_fmt(value)} | {origin} |" for key, value, origin in _recipe(run, winner)),
        "",
        "## Scores",
        "",
        "Each format scored on the validation split (used by the search to pick this trial) and "
        "on the held-out test split, which the search never saw.",
        "",
        format_scores(metrics),
        "",
        f"Test scores with 95 % bootstrap intervals ({BOOTSTRAP_RESAMPLES} resamples of the "
        f"{test['n']} test examples, seed {BOOTSTRAP_SEED}), beside the reference floor "
        f"({metrics['floor']['method']}) trained on the same training split:",
        "",
        format_intervals(metrics),
        "",
        f"Validation macro-F1 reported during the search: {winner.val_macro_f1:.4f} (training "
        "precision); the scores above are recomputed in fp32.",
    ]
    if "int8_test_macro_f1_drop" in metrics:
        lines.append(
            "int8 quantization changes test macro-F1 by "
            f"{0.0 - metrics['int8_test_macro_f1_drop']:+.4f}."
        )
    test_precision = config.metric_name(config.TEST, config.PRECISION)
    test_recall = config.metric_name(config.TEST, config.RECALL)
    lines += [
        "",
        "Per class on the test split (PyTorch):",
        "",
        "| class | support | precision | recall |",
        "|---|---:|---:|---:|",
        *(
            f"| {n} | {test['support'][n]} | {test[f'{test_precision}/{n}']:.4f} | "
            f"{test[f'{test_recall}/{n}']:.4f} |"
            for n in names
        ),
        "",
        "Confusion matrix on the test split (rows: true, columns: predicted; "
        + ", ".join(names)
        + "):",
        "",
        "```",
        *(
            f"{n:>12} " + " ".join(f"{c:6d}" for c in row)
            for n, row in zip(names, test["confusion_matrix"], strict=True)
        ),
        "```",
        "",
        "## Latency and throughput",
        "",
        f"{benchmark['cpu']} ({benchmark['cpu_count']} CPUs), {benchmark['threads']} intra-op "
        f"threads, real test texts (mean {benchmark['mean_tokens_batch1']:.1f} tokens at batch 1, "
        f"{benchmark['mean_tokens_batch32']:.1f} at batch 32), "
        f"{benchmark['warmup_calls']} warm-up calls; tokenization {benchmark['tokenization']}.",
        "",
        format_benchmark(benchmark),
        "",
        "## How to use it",
        "",
        "```python",
        "import sentune.model  # registers the model type with transformers",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "",
        'model = AutoModelForSequenceClassification.from_pretrained("EXPORT_DIR")',
        'tokenizer = AutoTokenizer.from_pretrained("EXPORT_DIR")',
        '# or: model = sentune.model.load_model("EXPORT_DIR")',
        f'batch = tokenizer(["what a day"], truncation=True, max_length={winner.max_length}, '
        'return_tensors="pt")',
        "label = model.config.id2label[int(model(**batch).logits.argmax(-1))]",
        "```",
        "",
        "No `trust_remote_code`: importing `sentune.model` registers the model class.",
        "",
        *_truncation_lines(winner),
        "With onnxruntime only (no torch):",
        "",
        "```",
        'sentune predict EXPORT_DIR "the battery died after a day" "best purchase this year"',
        "sentune predict EXPORT_DIR --file reviews.csv --column text > predictions.csv",
        "sentune predict EXPORT_DIR --file reviews.jsonl --format json   # every column kept",
        "sentune predict EXPORT_DIR --int8 ...   # the int8 model",
        "```",
        "",
    ]
    return "\n".join(lines)


def _truncation_lines(winner: Winner) -> list[str]:
    if winner.truncation == "head":
        return []
    return [
        f"This model was trained on `{winner.truncation}` truncation (see `sentune.batching`): "
        "the tokenizer's own truncation keeps the head of a longer text only. Tokenize without "
        "truncation and cut the ids with "
        f'`sentune.batching.truncate(ids, {winner.max_length}, "{winner.truncation}")`, as '
        "`sentune predict` does.",
        "",
    ]


def _files_lines(formats: tuple[str, ...]) -> list[str]:
    described = {
        "hf": "`config.json`, `model.safetensors`, tokenizer files: the Hugging Face model",
        "onnx": f"`{ONNX_FILE}`: ONNX (opset {ONNX_OPSET}), dynamic batch and sequence axes, "
        f"inputs {', '.join(ONNX_INPUTS)}, output logits; within {PARITY_ATOL:g} of PyTorch",
        "int8": f"`{INT8_FILE}`: the ONNX model with dynamic int8 (QInt8) weight quantization",
        "pt2": f"`{PT2_FILE}`: a `torch.export` program (`torch.export.load`)",
    }
    return [f"- {described[f]}" for f in formats] + [
        f"- `{METRICS_FILE}`, `{BENCHMARK_FILE}`: scores and timings; `{EXPORT_MANIFEST}`: what "
        "`sentune predict` reads"
    ]


def _data_lines(manifest: Manifest) -> list[str]:
    cfg, stats, label_names = manifest.data.config, manifest.data.stats, manifest.data.label_names
    source = stats.get("source", {})
    where = portable_text(str(source.get("hub_id") or source.get("path") or cfg.dataset))
    lines = [
        f"Dataset `{portable_text(cfg.dataset)}` ({source.get('kind', 'unknown')}: `{where}`), "
        f"fingerprint `{manifest.data.fingerprint}`; {stats.get('rows_read', '?')} rows read.",
        "Cleaning: HTML tags and entities, broken encodings and control characters repaired or "
        f"removed; texts under {cfg.min_words} words, empty texts, duplicates and texts with "
        "conflicting labels dropped; dropped rows: "
        + ", ".join(f"{k} {v}" for k, v in stats.get("dropped", {}).items())
        + ".",
        f"Stratified split (seed {cfg.seed}; validation {cfg.val_fraction}, test "
        f"{cfg.test_fraction} of the source's train split where it has none"
        + (f"; train subsampled to {cfg.train_size}" if cfg.train_size else "")
        + (f"; validation subsampled to {cfg.val_size}" if cfg.val_size else "")
        + ").",
        "",
        "| split | examples | " + " | ".join(label_names) + " |",
        "|---|---:|" + "---:|" * len(label_names),
    ]
    for split, size in stats.get("split_sizes", {}).items():
        counts = stats.get("class_counts", {}).get(split, {})
        lines.append(
            f"| {split} | {size} | "
            + " | ".join(str(counts.get(n, "")) for n in label_names)
            + " |"
        )
    return lines


def base_model_id(manifest: Manifest) -> str:
    """The base model by its hub id (`sentence-transformers/all-MiniLM-L6-v2`), or by its folder
    name when it was a local folder: never a path of the training machine."""
    return HUB_IDS.get(manifest.model) or portable_text(manifest.model)


#: An absolute POSIX path (not the `//` of a URL, not a fraction like `1/2`).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.@+~-]+/)*([\w.@+~-]+)/?")


def portable_text(text: str) -> str:
    """`text` with every absolute path replaced by its last component (the file or folder name).

    A space file or a dataset named by its path on the training machine says nothing useful
    elsewhere, and can say too much (user names, mount points).
    """
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1), text)


def _confirmed_lines(winner: Winner) -> list[str]:
    """The model card's account of the confirmation over seeds (none when there was none)."""
    if not winner.confirmed:
        return []
    return [
        "",
        "Confirmed over seeds: the best configurations were retrained to the full epoch budget "
        "with other `train.seed` values, and this one has the best mean validation macro-F1: "
        f"{winner.confirmed_line}. The exported weights are those of seed "
        f"{winner.params[runs.SEED_KEY]} ({winner.val_macro_f1:.4f}).",
    ]


def _recipe(run: Run, winner: Winner) -> list[tuple[str, Any, str]]:
    """(dotted key, value, origin) of the trial's head and training settings, then its epochs
    and precision; origin is `searched`, `fixed` or `default`."""
    space = run.manifest.space
    rows = []
    for section in config.TUNABLE_SECTIONS:
        built = config.to_dotted(config.build_section(section, winner.params), section)
        for key, value in built.items():
            origin = (
                "searched"
                if key in space.searched
                else "fixed"
                if key in space.fixed or key in winner.params
                else "default"
            )
            rows.append((key, value, origin))
    budget = run.manifest.budget
    rows.append(
        ("epochs", f"best epoch {winner.best_epoch:g} of at most {budget.max_epochs}", "budget")
    )
    rows.append(("precision", _precision(run.manifest), "search setting"))
    return rows


def _precision(manifest: Manifest) -> str:
    """The trials' precision; `auto` resolved as the trial resolved it on the run's device."""
    chosen = manifest.settings.precision
    if chosen != "auto":
        return chosen
    if manifest.budget.gpus_per_trial > 0:
        return "auto (fp16 or bf16 on the GPU)"
    return "auto → bf16 (native on the CPU)" if manifest.device.get("cpu_bf16") else "auto → fp32"


def _card_metadata(
    run: Run, winner: Winner, metrics: dict[str, Any], formats: tuple[str, ...]
) -> dict[str, Any]:
    """The model card's YAML header, as the Hugging Face Hub reads it."""
    manifest = run.manifest
    dataset = portable_text(manifest.data.config.dataset)
    test = metrics["formats"]["pytorch"]["test"]
    f1_key = config.metric_name(config.TEST, config.MACRO_F1)
    accuracy_key = config.metric_name(config.TEST, config.ACCURACY)
    tags = ["sentune", "sentiment-analysis", "text-classification"]
    tags += [f for f in ("onnx",) if f in formats]
    return {
        "license": LICENSES.get(manifest.model, "other"),
        "base_model": base_model_id(manifest),
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "tags": tags,
        "model-index": [
            {
                "name": f"{run.path.name}-{winner.trial_id}",
                "results": [
                    {
                        "task": {"type": "text-classification", "name": "Sentiment analysis"},
                        "dataset": {"name": dataset, "type": dataset, "split": "test"},
                        "metrics": [
                            {
                                "type": "f1",
                                "name": "macro-F1",
                                "value": round(test[f1_key], 4),
                                "args": {"average": "macro"},
                            },
                            {
                                "type": "accuracy",
                                "name": "accuracy",
                                "value": round(test[accuracy_key], 4),
                            },
                        ],
                    }
                ],
            }
        ],
    }


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else f"`{value}`"
