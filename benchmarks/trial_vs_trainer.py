"""Benchmark: sentune's trial loop against the plain Hugging Face `Trainer`, same configuration.

Both train the same model class (encoder + sentune head) from the same pretrained weights on the
same examples, for the same epochs, batch size, max_length, learning rate, warmup, weight decay,
precision and threads. The Trainer follows the standard recipe: tokenize with truncation, pad each
batch with `DataCollatorWithPadding`, shuffle at random. Prints training throughput (samples/s,
evaluation excluded), wall time and validation macro-F1 of both, and the ratios.

    python benchmarks/trial_vs_trainer.py --train-size 2000 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

from sentune import config
from sentune.config import DataConfig, TrainConfig, TrialSettings
from sentune.data import prepare
from sentune.model import build_model, class_weights, load_tokenizer, resolve_model
from sentune.trial import compute_metrics, resolve_precision, run_trial


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

    results = {
        "trainer": _run_trainer(data, model_path, train, args.epochs, precision),
        "sentune": _run_sentune(data, model_path, train, args.epochs, precision),
    }
    print()
    print(f"{'loop':<10}{'samples/s':>12}{'train s':>10}{'wall s':>10}{'val macro-F1':>14}")
    for name, r in results.items():
        print(
            f"{name:<10}{r['samples_per_s']:>12.1f}{r['train_s']:>10.1f}{r['wall_s']:>10.1f}"
            f"{r['val_macro_f1']:>14.4f}"
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


def _run_sentune(data, model_path, train: TrainConfig, epochs: int, precision: str) -> dict:
    history = []
    trial_config = config.to_dotted(train, "train")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        result = run_trial(
            trial_config,
            data,
            lambda metrics, _checkpoint: history.append(metrics),
            settings=TrialSettings(
                model=model_path, max_epochs=epochs, precision=precision, checkpoint_dir=workdir
            ),
        )
    wall = time.perf_counter() - started
    n = len(data.train) * epochs
    return {
        "samples_per_s": n / result.train_s,
        "train_s": result.train_s,
        "wall_s": wall,
        "val_macro_f1": history[-1][config.OBJECTIVE],
    }


def _run_trainer(data, model_path, train: TrainConfig, epochs: int, precision: str) -> dict:
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    set_seed(train.seed)
    tokenizer = load_tokenizer(model_path)
    model = build_model(
        model_path,
        config.HeadConfig(),
        label_names=list(data.label_names),
        class_weights=class_weights(np.bincount(data.train.labels).tolist(), train.imbalance),
    )

    def dataset(split) -> Dataset:
        encoded = tokenizer(split.texts, truncation=True, max_length=train.max_length)
        return Dataset.from_dict({**encoded, "labels": split.labels.tolist()})

    train_set, val_set = dataset(data.train), dataset(data.validation)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            num_train_epochs=epochs,
            per_device_train_batch_size=train.batch_size,
            per_device_eval_batch_size=train.batch_size * 2,
            learning_rate=train.learning_rate,
            weight_decay=train.weight_decay,
            # transformers 5: a float warmup_steps below 1 is a ratio of all steps.
            warmup_steps=train.warmup_ratio,
            lr_scheduler_type="linear",
            max_grad_norm=train.max_grad_norm,
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            use_cpu=not torch.cuda.is_available(),
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            disable_tqdm=True,
            seed=train.seed,
            dataloader_num_workers=0,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_set,
            data_collator=DataCollatorWithPadding(tokenizer),
        )
        started = time.perf_counter()
        out_metrics = trainer.train().metrics
        train_s = time.perf_counter() - started
        prediction = trainer.predict(val_set)
        wall = time.perf_counter() - started
    preds = np.asarray(prediction.predictions).argmax(-1)
    f1 = compute_metrics(data.validation.labels, preds, list(data.label_names))[config.OBJECTIVE]
    return {
        "samples_per_s": out_metrics["train_samples_per_second"],
        "train_s": train_s,
        "wall_s": wall,
        "val_macro_f1": f1,
    }


if __name__ == "__main__":
    main()
