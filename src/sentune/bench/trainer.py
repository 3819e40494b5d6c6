"""The Hugging Face `Trainer` set-up that the peer and the throughput measurement share.

The standard recipe: tokenize with truncation to `train.max_length`, pad each batch with
`DataCollatorWithPadding`, shuffle at random, linear schedule, no checkpoints, no logging. The
model is sentune's (encoder + head, class-weighted loss), so the Trainer and the trial loop train
the same thing; the `train.*` values of one configuration are mapped onto `TrainingArguments`
here, once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sentune import config
from sentune.data import PreparedData

#: `train.*` keys that `training_fields` maps onto TrainingArguments.
TRAINING_KEYS = (
    "train.learning_rate",
    "train.weight_decay",
    "train.warmup_ratio",
    "train.batch_size",
    "train.effective_batch_size",
    "train.max_grad_norm",
)
#: Keys that reach the Trainer through the model (the head and the class weights of the loss).
MODEL_KEYS = (*config.dotted_keys("head"), "train.imbalance")


def setup_process(threads: int | None) -> None:
    """Set torch's threads (None: torch's default) and silence the Hugging Face progress bars
    of a measuring process."""
    import torch
    from transformers.utils import logging as hf_logging

    if threads:
        torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()


def training_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The TrainingArguments fields of one configuration.

    Args:
        values: Dotted `train.*` values (a full section: defaults, fixed and searched values).

    Returns:
        Keyword arguments of `TrainingArguments` (learning rate, weight decay, warmup, batch
        size, gradient accumulation, gradient clipping).
    """
    train = config.build_section("train", values)
    return {
        "learning_rate": train.learning_rate,
        "weight_decay": train.weight_decay,
        # transformers 5: a float warmup_steps below 1 is a ratio of all steps.
        "warmup_steps": float(train.warmup_ratio),
        "per_device_train_batch_size": train.batch_size,
        "gradient_accumulation_steps": max(
            1, math.ceil(train.effective_batch_size / train.batch_size)
        ),
        "max_grad_norm": train.max_grad_norm,
    }


def model_builder(model_path: str, data: PreparedData) -> Callable[[dict[str, Any]], Any]:
    """A function from dotted values to a fresh sentune model: the `head.*` section and the
    class weights of `train.imbalance` over the training labels."""
    from sentune.train.model import build_model, class_weights

    label_names = list(data.label_names)
    counts = np.bincount(data.train.labels, minlength=len(label_names)).tolist()

    def build(values: dict[str, Any]):
        return build_model(
            model_path,
            config.build_section("head", values),
            label_names=label_names,
            class_weights=class_weights(counts, values["train.imbalance"]),
        )

    return build


def build_trainer(
    data: PreparedData,
    model_path: str,
    values: dict[str, Any],
    *,
    output_dir: str,
    epochs: int,
    precision: str,
    device: str,
    evaluate_each_epoch: bool = False,
    model_init: Callable[..., Any] | None = None,
    callbacks: Sequence[Any] = (),
):
    """A `Trainer` with the standard recipe on the training split, validation as its eval set.

    Args:
        data: Prepared data (its texts are re-tokenized with truncation, as the recipe does).
        model_path: The resolved encoder.
        values: The configuration's dotted values (`train.*` for the arguments, the model's
            keys unless `model_init` is given).
        output_dir: The Trainer's scratch folder (nothing is saved to it).
        epochs: Training epochs.
        precision: A resolved precision: `fp32`, `bf16` or `fp16`.
        device: A resolved device: `cpu` or `cuda`.
        evaluate_each_epoch: Evaluate on the validation split after each epoch.
        model_init: The Trainer's `model_init` (a search builds one model per trial); None
            builds one model from `values`, seeded with `train.seed`.
        callbacks: Trainer callbacks.

    Returns:
        The Trainer, with macro-F1 and the other metrics of `evaluate.compute_metrics`.
    """
    from datasets import Dataset
    from transformers import (
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from sentune.train.encoders import load_tokenizer
    from sentune.train.evaluate import compute_metrics

    train = config.build_section("train", values)
    tokenizer = load_tokenizer(model_path)
    label_names = list(data.label_names)

    def dataset(split) -> Dataset:
        encoded = tokenizer(split.texts, truncation=True, max_length=train.max_length)
        return Dataset.from_dict({**encoded, "labels": split.labels.tolist()})

    def metrics(prediction) -> dict[str, float]:
        preds = np.asarray(prediction.predictions).argmax(-1)
        return compute_metrics(np.asarray(prediction.label_ids), preds, label_names)

    args = TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=epochs,
        per_device_eval_batch_size=2 * train.batch_size,
        lr_scheduler_type="linear",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        eval_strategy="epoch" if evaluate_each_epoch else "no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=train.seed,
        dataloader_num_workers=0,
        **training_fields(values),
    )
    model = None
    if model_init is None:
        set_seed(train.seed)
        model = model_builder(model_path, data)(values)
    trainer = Trainer(
        model=model,
        model_init=model_init,
        args=args,
        train_dataset=dataset(data.train),
        eval_dataset=dataset(data.validation),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=metrics,
        callbacks=list(callbacks),
    )
    # With tqdm off the Trainer prints every evaluation's metrics; the callers record them.
    trainer.remove_callback(PrinterCallback)
    return trainer
