"""Benchmark: sentune's trial loop against the plain Hugging Face `Trainer`, same configuration.

Both train the same model class (encoder + sentune head) from the same pretrained weights on the
same examples, for the same epochs, batch size, max_length, learning rate, warmup, weight decay,
precision, threads and device (the measurements live in `sentune.bench.throughput`, which the
bench uses too). The Trainer follows the standard recipe of `sentune.bench.trainer`: tokenize
with truncation, pad each batch with `DataCollatorWithPadding`, shuffle at random. Prints
training throughput (samples/s, evaluation excluded), evaluation and wall time, validation
macro-F1 and peak memory of both, and the ratios.

    python benchmarks/trial_vs_trainer.py --train-size 2000 --epochs 1
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch

from sentune import config
from sentune.bench.memory import run_isolated
from sentune.bench.throughput import Measurement, measure_trainer, measure_trial_loop
from sentune.config import DataConfig, HeadConfig, TrainConfig
from sentune.data import prepare
from sentune.train.device import resolve_precision
from sentune.train.model import resolve_model


def main() -> None:
    args = _parse()
    torch.set_num_threads(args.threads)
    model_path = resolve_model(args.model)
    data_cfg = DataConfig(dataset=args.dataset, train_size=args.train_size, val_size=args.val_size)
    data = prepare(data_cfg, model_path)
    train = replace(
        TrainConfig(),
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        effective_batch_size=args.batch_size,
        max_length=args.max_length,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(args.precision, device)
    print(
        f"model {args.model}, {len(data.train)} train / {len(data.validation)} val examples, "
        f"{args.epochs} epoch(s), batch {args.batch_size}, max_length {args.max_length}, "
        f"precision {precision}, {args.threads} threads, device {device}"
    )

    measurement = Measurement(
        train=train,
        head=HeadConfig(),
        epochs=args.epochs,
        precision=precision,
        device=device,
        threads=args.threads,
    )
    results = {
        # Each in a fresh process, so that each peak memory reading is its own.
        "trainer": run_isolated(measure_trainer, data, model_path, measurement),
        "sentune": run_isolated(measure_trial_loop, data, model_path, measurement),
    }
    print()
    print(
        f"{'loop':<10}{'samples/s':>12}{'train s':>10}{'eval s':>9}{'wall s':>10}"
        f"{'val macro-F1':>14}{'peak RSS MiB':>14}"
    )
    for name, r in results.items():
        print(
            f"{name:<10}{r['samples_per_s']:>12.1f}{r['train_s']:>10.1f}{r['eval_s']:>9.1f}"
            f"{r['wall_s']:>10.1f}{r['val_macro_f1']:>14.4f}{r['peak_rss_mb']:>14.0f}"
        )
    ratio = results["sentune"]["samples_per_s"] / results["trainer"]["samples_per_s"]
    wall = results["trainer"]["wall_s"] / results["sentune"]["wall_s"]
    print(f"\nsentune / Trainer throughput: {ratio:.2f}x; Trainer / sentune wall time: {wall:.2f}x")
    if args.json:
        print(json.dumps(results))


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="minilm")
    p.add_argument("--dataset", default="tweets")
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--precision", default="auto", choices=config.PRECISIONS)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    return p.parse_args()


if __name__ == "__main__":
    main()
