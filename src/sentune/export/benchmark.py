"""The export's benchmark: latency at batch 1 and throughput at batch 32 of each format, on
real test texts, with the settings that make the figures comparable."""

from __future__ import annotations

import logging
import os
from importlib import metadata
from typing import Any

import numpy as np
import torch

from sentune import config, machine
from sentune.data import PreparedData
from sentune.export.common import TOKENIZATION_NOTE, Engine, ExportOptions, Winner
from sentune.serve.engines import summarize, timed, timing_batches

log = logging.getLogger(__name__)


def measure(
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
        log.info(
            "benchmark %s: batch 1 p50 %.2f ms, p95 %.2f ms; batch %d p50 %.1f ms, %.1f texts/s",
            name,
            p50,
            p95,
            config.LATENCY_BATCH_SIZE,
            results[name]["b32_p50_ms"],
            throughput,
        )
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
