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
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from sentune import config, runs
from sentune.analysis import (
    Confirmation,
    confirmation,
    leaderboard,
    trial_max_length,
    trial_truncation,
)
from sentune.data import PreparedData
from sentune.errors import ExportError, RunError
from sentune.export.benchmark import measure
from sentune.export.calibrate import calibrate
from sentune.export.card import format_benchmark, format_intervals, format_scores, model_card
from sentune.export.common import (
    BENCHMARK_FILE,
    CARD_FILE,
    DEFAULT_FORMATS,
    EXPORT_DIR,
    FORMATS,
    METRICS_FILE,
    ONNX_OPSET,
    PARITY_ATOL,
    PT2_FILE,
    ExportOptions,
    ExportResult,
    Winner,
    base_model_id,
)
from sentune.export.models import torch_engine, write_models
from sentune.export.scoring import score
from sentune.runs import Run
from sentune.serve.onnx import (
    EXPORT_MANIFEST,
    INT8_FILE,
    ONNX_FILE,
    ONNX_INPUTS,
    import_onnxruntime,
)

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
        calibration = calibrate(_uncalibrated_engine(winner), data, winner)
        engines, parity = write_models(
            winner,
            data,
            tmp,
            formats,
            options,
            threads,
            base_model=base_model_id(run.manifest),
            temperature=calibration["temperature"],
        )
        metrics = {**score(engines, data, winner, run, parity), "calibration": calibration}
        benchmark = measure(engines, data, winner, threads, options)
        if budget is not None:
            benchmark["budget"] = _check_budget(run, winner, benchmark, served, budget)
        runs.write_json(tmp / METRICS_FILE, metrics)
        runs.write_json(tmp / BENCHMARK_FILE, benchmark)
        manifest = _export_manifest(run, winner, data, formats, calibration["temperature"])
        runs.write_json(tmp / EXPORT_MANIFEST, manifest)
        (tmp / CARD_FILE).write_text(model_card(run, winner, metrics, benchmark, formats))
        _move_into_place(tmp, out)
    finally:
        torch.set_num_threads(previous_threads)
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("export of trial %s written to %s", winner.trial_id, out)
    return ExportResult(out, winner, metrics, benchmark)


def _uncalibrated_engine(winner: Winner):
    """The winner's model as it was trained (temperature 1), on this process's CPU threads."""
    from sentune.serve.engines import LogitsOnly
    from sentune.train.model import load_model

    model = load_model(winner.checkpoint).eval()
    model.config.temperature = 1.0
    return torch_engine(LogitsOnly(model).eval())


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


# --- writing ---------------------------------------------------------------------------------


def _export_manifest(
    run: Run,
    winner: Winner,
    data: PreparedData,
    formats: tuple[str, ...],
    temperature: float = 1.0,
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
        # Inside every format already (the model divides its logits by it): for the record.
        "temperature": temperature,
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
