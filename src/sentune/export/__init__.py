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
import shutil
import tempfile
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sentune import config, machine, runs
from sentune.analysis import (
    Confirmation,
    confirmation,
    leaderboard,
    trial_max_length,
    trial_truncation,
)
from sentune.data import PreparedData, Split
from sentune.data.batching import pad_batch, sorted_batches
from sentune.errors import ExportError, RunError
from sentune.export.card import format_benchmark, format_intervals, format_scores, model_card
from sentune.export.common import (
    BENCHMARK_FILE,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CARD_FILE,
    DEFAULT_FORMATS,
    EVAL_BATCH,
    EXPORT_DIR,
    FORMATS,
    INTERVAL_METRICS,
    METRICS_FILE,
    ONNX_OPSET,
    PARITY_ATOL,
    PT2_FILE,
    TOKENIZATION_NOTE,
    Engine,
    ExportOptions,
    ExportResult,
    Winner,
    base_model_id,
    macro_f1_of,
)
from sentune.export.models import write_models
from sentune.runs import Run
from sentune.serve.engines import summarize, timed, timing_batches
from sentune.serve.onnx import (
    EXPORT_MANIFEST,
    INT8_FILE,
    ONNX_FILE,
    ONNX_INPUTS,
    import_onnxruntime,
)
from sentune.train.evaluate import FLOOR_METHOD, bootstrap_interval, floor_scores, split_scores

log = logging.getLogger(__name__)

__all__ = [
    "BENCHMARK_FILE",
    "CARD_FILE",
    "DEFAULT_FORMATS",
    "EXPORT_DIR",
    "FORMATS",
    "METRICS_FILE",
    "PARITY_ATOL",
    "ExportOptions",
    "ExportResult",
    "Winner",
    "export_winner",
    "format_benchmark",
    "format_intervals",
    "format_scores",
    "chosen_trial",
    "export_dir",
    "plan",
    "select_winner",
]
_DEFAULT_OPTIONS = ExportOptions()


def export_winner(
    run_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    analysis_root: str | Path = Path(config.ANALYSIS_DIR),
    options: ExportOptions = _DEFAULT_OPTIONS,
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
    budget = options.max_latency_ms
    winner = select_winner(run, chosen_trial(run, options))
    if options.refit:
        winner = _with_refit(run, winner)
    served = _served_engine(winner, formats) if budget is not None else None
    out = export_dir(run.path, out_dir, analysis_root)
    _check_target(out, force=options.force)
    data = _load_data(run, winner, cache_dir=options.cache_dir)
    threads = options.threads or os.cpu_count() or 1
    if budget is not None and options.threads is None:
        # Like for like: the trials measured their latency with their own threads.
        threads = run.manifest.settings.num_threads or threads

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        engines, parity = write_models(
            winner, data, tmp, formats, options, threads, base_model=base_model_id(run.manifest)
        )
        metrics = _score(engines, data, winner, run, parity)
        benchmark = _benchmark(engines, data, winner, threads, options)
        if budget is not None:
            benchmark["budget"] = _check_budget(run, winner, benchmark, served, budget)
        runs.write_json(tmp / METRICS_FILE, metrics)
        runs.write_json(tmp / BENCHMARK_FILE, benchmark)
        runs.write_json(tmp / EXPORT_MANIFEST, _export_manifest(run, winner, data, formats))
        (tmp / CARD_FILE).write_text(model_card(run, winner, metrics, benchmark, formats))
        _move_into_place(tmp, out)
    finally:
        torch.set_num_threads(previous_threads)
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("export of trial %s written to %s", winner.trial_id, out)
    return ExportResult(out, winner, metrics, benchmark)


def chosen_trial(run: Run, options: ExportOptions) -> str | None:
    """The trial `options` names: `options.trial`, or under a latency budget the best trial on
    the Pareto front that meets it; None: the winner (`select_winner`)."""
    if options.trial is None and options.max_latency_ms is not None:
        return _fastest_good_enough(run, options.max_latency_ms)
    return options.trial


def export_dir(run_dir: Path, out_dir: str | Path | None, analysis_root: str | Path) -> Path:
    """Where the export of `run_dir` goes: `out_dir`, else `<analysis_root>/<run>/export`."""
    return Path(out_dir) if out_dir else Path(analysis_root) / Path(run_dir).name / EXPORT_DIR


def plan(
    run_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    analysis_root: str | Path = Path(config.ANALYSIS_DIR),
    options: ExportOptions = _DEFAULT_OPTIONS,
) -> str:
    """The checks of `export_winner` that need no model (formats, the trial, the target
    folder), made before a refit trains for minutes.

    Returns:
        The id of the search trial whose configuration is to be exported.
    """
    _check_formats(options.formats)
    run = runs.open_run(run_dir)
    winner = select_winner(run, chosen_trial(run, options))
    _check_target(export_dir(run.path, out_dir, analysis_root), force=options.force)
    return winner.trial_id


def _with_refit(run: Run, winner: Winner) -> Winner:
    """The winner with its refit's model (`runs.finished_refit`), where there is one: the
    configuration and seed of its search trial, trained on the whole training split."""
    refit = runs.finished_refit(run.path, winner.trial_id)
    if refit is None:
        return winner
    return replace(
        winner,
        checkpoint=refit.checkpoint,
        params=run.params[winner.trial_id],
        best_epoch=float(refit.record["best_epoch"]),
        refit=refit.record,
    )


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
    ready = table[table[config.VAL_MACRO_F1].notna() & (table["checkpoint"] != "")]
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
    return Winner(
        trial_id=str(row["trial_id"]),
        rank=int(row.name) + 1,
        checkpoint=Path(row["checkpoint"]),
        params=params,
        val_macro_f1=float(row[config.VAL_MACRO_F1]),
        best_epoch=float(row["best_epoch"]),
        max_length=trial_max_length(run, str(row["trial_id"])),
        truncation=trial_truncation(run, str(row["trial_id"])),
    )


# --- a latency budget --------------------------------------------------------------------------


def _fastest_good_enough(run: Run, budget_ms: float) -> str:
    """The trial with the best macro-F1 on the run's Pareto front whose p95 latency meets the
    budget (`analysis.choose_under_budget`).

    Raises:
        ExportError: The trials measured no latency, or none on the front meets the budget.
    """
    from sentune.analysis import pareto

    front = pareto(run, budget_ms=budget_ms)
    if front is None:
        raise ExportError(
            f"--max-latency-ms: the trials of {run.path.name} measured no latency; search a "
            "space with a latency objective (e.g. `sentune search latency`, or add "
            "--max-latency-ms to the search)"
        )
    if front.chosen is None:
        table = front.table[front.table["checkpoint"] != ""]
        fastest = table.loc[table[config.LATENCY_P95_MS].idxmin()] if len(table) else None
        hint = (
            f"the fastest trial ({fastest['trial_id']}) has p95 "
            f"{fastest[config.LATENCY_P95_MS]:.2f} ms; raise the budget to at least that"
            if fastest is not None
            else "no trial has a checkpoint"
        )
        raise ExportError(
            f"--max-latency-ms {budget_ms:g}: no trial on the Pareto front of "
            f"{run.path.name} meets it ({hint})"
        )
    log.info("best trial on the front within %g ms: %s", budget_ms, front.chosen)
    return front.chosen


def _served_engine(winner: Winner, formats: tuple[str, ...]) -> str:
    """The exported format the trial was timed as (`serve.int8`), which the budget applies to."""
    engine = "int8" if config.build_section("serve", winner.params).int8 else "onnx"
    if engine not in formats:
        raise ExportError(
            f"--max-latency-ms: trial {winner.trial_id} is served as {engine} "
            f"(serve.int8 {engine == 'int8'}), which --formats {','.join(formats)} leaves out; "
            f"add {engine}"
        )
    return engine


def _check_budget(
    run: Run, winner: Winner, benchmark: dict[str, Any], engine: str, budget_ms: float
) -> dict[str, Any]:
    """The exported model's re-measured p95 against the budget.

    Raises:
        ExportError: The re-measured p95 misses the budget (nothing is written).
    """
    measured = benchmark["results"][engine]["b1_p95_ms"]
    history = run.histories.get(winner.trial_id, pd.DataFrame())
    during_search = (
        float(history[config.LATENCY_P95_MS].dropna().iloc[-1])
        if config.LATENCY_P95_MS in history and history[config.LATENCY_P95_MS].notna().any()
        else None
    )
    if measured > budget_ms:
        raise ExportError(
            f"--max-latency-ms {budget_ms:g}: trial {winner.trial_id} ({engine}) measured p95 "
            f"{measured:.2f} ms now ({during_search or float('nan'):.2f} ms in the search) and "
            "misses the budget; nothing was written; retry on a quieter machine, raise the "
            "budget, or export a faster trial with --trial"
        )
    log.info(
        "latency budget %g ms met: %s p95 %.2f ms (%.2f ms in the search)",
        budget_ms,
        engine,
        measured,
        during_search or float("nan"),
    )
    return {
        "max_latency_ms": budget_ms,
        "engine": engine,
        "p95_ms": measured,
        "search_p95_ms": during_search,
        "threads": benchmark["threads"],
    }


def _confirmed_winner(
    run: Run, table: pd.DataFrame, confirmed: Confirmation, best_seed: pd.Series
) -> Winner:
    seeds = confirmed.table[confirmed.table["trial_id"] == confirmed.winner]
    params = {**run.params[confirmed.winner], runs.SEED_KEY: int(best_seed["seed"])}
    return Winner(
        trial_id=str(confirmed.winner),
        rank=int(best_seed["rank"]),
        checkpoint=Path(best_seed["checkpoint"]),
        params=params,
        val_macro_f1=float(best_seed[config.VAL_MACRO_F1]),
        best_epoch=float(best_seed["best_epoch"]),
        max_length=trial_max_length(run, confirmed.winner),
        truncation=trial_truncation(run, confirmed.winner),
        confirmed={int(r["seed"]): float(r[config.VAL_MACRO_F1]) for _, r in seeds.iterrows()},
    )


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
    """The run's data rebuilt from its manifest, checked against the recorded fingerprint; with
    a refit, the whole training split, checked against the refit's record."""
    # The checkpoint holds the same tokenizer; it serves when the base model folder is gone.
    model_path = run.manifest.model_path
    tokenizer = model_path if Path(model_path).is_dir() else str(winner.checkpoint)
    if winner.refit is None:
        return runs.load_data(run.manifest, cache_dir=cache_dir, tokenizer=tokenizer)
    from sentune.data import prepare

    cfg = replace(run.manifest.data.config, train_size=None)
    data = prepare(cfg, tokenizer, cache_dir=cache_dir)
    if data.fingerprint != winner.refit["data_fingerprint"]:
        raise RunError(
            f"run {run.path.name}: the data changed since the refit (fingerprint "
            f"{data.fingerprint}, the refit recorded {winner.refit['data_fingerprint']}); restore "
            f"the dataset, or refit again: sentune refit {run.path} --force"
        )
    return data


# --- scoring ---------------------------------------------------------------------------------


def _predict_split(engine: Engine, split: Split, ids: list[np.ndarray], pad_id: int) -> np.ndarray:
    preds = np.empty(len(split), dtype=np.int64)
    for indices in sorted_batches(split.lengths, EVAL_BATCH):
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
            macro_f1_of(formats[name], "test"),
            macro_f1_of(formats[name], "validation"),
            time.perf_counter() - started,
        )
    gap = {
        name: macro_f1_of(f, "test") - macro_f1_of(f, "validation") for name, f in formats.items()
    }
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
        "train_size": len(data.train),
        "search_train_size": run.manifest.data.stats.get("split_sizes", {}).get("train"),
        "refit": winner.refit,
    }
    metrics["vs_floor"] = _against_floor(metrics)
    if "int8" in formats:
        base = macro_f1_of(formats["pytorch"], "test")
        metrics["int8_test_macro_f1_drop"] = base - macro_f1_of(formats["int8"], "test")
    return metrics


def _against_floor(metrics: dict[str, Any]) -> dict[str, Any]:
    """The shipped model against the floor trained on the same examples, on the test split:
    the gap in macro-F1 and whether their 95 % intervals overlap."""
    key = config.metric_name(config.TEST, config.MACRO_F1)
    model, floor = macro_f1_of(metrics["formats"]["pytorch"], "test"), metrics["floor"][key]
    mine, theirs = metrics["test_intervals"][key], metrics["floor"]["intervals"][key]
    return {
        "test_macro_f1_gain": model - floor,
        "beats_floor": model > floor,
        "intervals_overlap": mine["low"] <= theirs["high"] and theirs["low"] <= mine["high"],
    }


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


def _scored_splits(data: PreparedData):
    """(name in metrics.json, metric prefix, split) of the scored splits."""
    return (("validation", config.VAL, data.validation), ("test", config.TEST, data.test))


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
    singles = timing_batches(ids, data.pad_id, count=options.warmup + options.latency_runs)
    batches = timing_batches(
        ids,
        data.pad_id,
        count=options.warmup + options.throughput_batches,
        batch_size=config.LATENCY_BATCH_SIZE,
    )
    results: dict[str, dict[str, float]] = {}
    for name, engine in engines.items():
        single_ms = timed(engine, singles, options.warmup)
        batch_ms = timed(engine, batches, options.warmup)
        p50, p95, throughput = summarize(single_ms, batch_ms)
        results[name] = {
            "b1_p50_ms": p50,
            "b1_p95_ms": p95,
            "b32_p50_ms": float(np.percentile(batch_ms, 50)),
            "b32_texts_per_s": throughput,
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
        "cpu": machine.cpu_name(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "results": results,
    }


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
