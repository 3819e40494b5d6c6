"""Train: one trial of the sentiment model on prepared data, without Ray.

`run_trial(config, data, report, settings=...)` fine-tunes one configuration and reports each
evaluation through a callback, so a test, a benchmark or a GPU host calls it directly; only
`search` wraps it for Ray Tune. This package never imports `search` or Ray.

Modules, one job each: `encoders` (which encoder a name means, its config and tokenizer; no
modeling code), `model` (`SentimentModel`, its heads), `trial` (the loop: evaluations,
checkpoints, resume), `device` (device, precision, `torch.compile`), `optim` (parameter groups,
warmup and decay), `batches` (training batches as tensors), `evaluate` (metrics defined once,
logits, the TF-IDF floor, a checkpoint's confusion), `scratch` (a trial's scratch folder).
"""

from sentune.lazy import lazy_exports

#: Each public name and the module that defines it: imported on first use (PEP 562), so that a
#: light module (`train.encoders`, which a search reads while Ray starts, or `train.scratch`)
#: is imported without the trial loop, the model's modeling code or accelerate.
_PUBLIC = {
    "IGNORE_LABEL": "batches",
    "Batch": "batches",
    "collate": "batches",
    "training_batches": "batches",
    "COMPILE_RECOMPILE_LIMIT": "device",
    "compile_mode": "device",
    "compile_model": "device",
    "mixed_precision": "device",
    "reset_accelerate": "device",
    "resolve_device": "device",
    "resolve_precision": "device",
    "synchronize": "device",
    "HUB_IDS": "encoders",
    "LICENSES": "encoders",
    "MODELS": "encoders",
    "SentimentConfig": "encoders",
    "check_encoder_layers": "encoders",
    "config_from_dict": "encoders",
    "encoder_config": "encoders",
    "encoder_layers": "encoders",
    "encoder_max_length": "encoders",
    "load_failed": "encoders",
    "load_tokenizer": "encoders",
    "resolve_model": "encoders",
    "FLOOR_METHOD": "evaluate",
    "Confusion": "evaluate",
    "Floor": "evaluate",
    "Interval": "evaluate",
    "bootstrap_interval": "evaluate",
    "build_floor_model": "evaluate",
    "checkpoint_confusion": "evaluate",
    "compute_metrics": "evaluate",
    "floor_scores": "evaluate",
    "predict_logits": "evaluate",
    "reference_floor": "evaluate",
    "save_predictions": "evaluate",
    "score": "evaluate",
    "score_confusion": "evaluate",
    "split_scores": "evaluate",
    "stored_predictions": "evaluate",
    "to_device": "evaluate",
    "torch_device_type": "evaluate",
    "SentimentModel": "model",
    "build_model": "model",
    "class_weights": "model",
    "load_model": "model",
    "linear_warmup_decay": "optim",
    "parameter_groups": "optim",
    "OnStep": "trial",
    "Report": "trial",
    "TrialOutOfMemory": "trial",
    "TrialResult": "trial",
    "out_of_memory_message": "trial",
    "release_memory": "trial",
    "run_trial": "trial",
}

__all__ = sorted(_PUBLIC)


__getattr__ = lazy_exports(__name__, _PUBLIC)
