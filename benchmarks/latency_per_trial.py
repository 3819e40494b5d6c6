"""What a latency-aware trial pays to measure its model, and what the trade-off keys buy.

For each architecture (encoder layers kept, fp32 or int8 ONNX) it builds MiniLM with a fresh
head, measures it with `inference.measure_latency` exactly as a trial does (ONNX export,
onnxruntime, 3 warm-up + 30 batch-1 calls and 4 batch-32 calls on validation tweets cut to
`--max-length`) and prints p50/p95 latency, batch-32 throughput, model size and the seconds the
measurement took, each beside the full model in fp32 (the baseline, measured in the same run).

    python benchmarks/latency_per_trial.py --threads 2 --layers 1,3,6 --max-length 64
"""

from __future__ import annotations

import argparse
import time

import torch

from sentune.config import DataConfig, HeadConfig
from sentune.data import prepare
from sentune.serve.engines import measure_latency
from sentune.train.encoders import encoder_layers, resolve_model
from sentune.train.model import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--layers", default="1,3,6", help="encoder layers kept, comma-separated")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--texts", type=int, default=300, help="validation tweets timed")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    path = resolve_model(args.model)
    data = prepare(DataConfig(val_size=args.texts, train_size=100), path)
    ids = data.validation.truncated(args.max_length, "head")
    total = encoder_layers(path)
    layers = sorted({int(k) for k in args.layers.split(",")} | {total}, reverse=True)
    rows = []
    for kept in layers:
        for int8 in (False, True):
            model = build_model(path, HeadConfig(), label_names=list(data.label_names),
                                encoder_layers=kept)  # fmt: skip
            started = time.perf_counter()
            latency = measure_latency(model, ids, data.pad_id, int8=int8, threads=args.threads)
            rows.append((kept, latency, time.perf_counter() - started))
    base = rows[0][1]  # all layers, fp32
    print(
        f"\n{args.model}, max_length {args.max_length}, {args.threads} threads, "
        f"{len(ids)} validation tweets; baseline: {total} layers fp32 ONNX"
    )
    print(
        f"{'layers':>6} {'engine':>6} {'p50 ms':>8} {'p95 ms':>8} {'b32 texts/s':>12} "
        f"{'MB':>7} {'p95 vs base':>11} {'measure s':>9}"
    )
    for kept, latency, seconds in rows:
        print(
            f"{kept:>6} {latency.engine:>6} {latency.p50_ms:8.2f} {latency.p95_ms:8.2f} "
            f"{latency.throughput_b32:12.1f} {latency.model_mb:7.1f} "
            f"{latency.p95_ms / base.p95_ms:10.2f}x {seconds:9.1f}"
        )


if __name__ == "__main__":
    main()
