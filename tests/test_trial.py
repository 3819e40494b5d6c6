"""The trial loop, run directly (no Ray) on a tiny random BERT."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from sentune import config
from sentune.config import DataConfig, TrainConfig, TrialSettings
from sentune.data import prepare
from sentune.data.batching import sorted_batches
from sentune.errors import SentuneError
from sentune.train.batches import collate, training_batches
from sentune.train.device import resolve_precision
from sentune.train.evaluate import checkpoint_confusion, compute_metrics
from sentune.train.model import build_model, load_model
from sentune.train.optim import linear_warmup_decay, parameter_groups
from sentune.train.trial import run_trial


@pytest.fixture(scope="module")
def tiny_data(tiny_csv, tiny_model_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return prepare(DataConfig(dataset=str(tiny_csv)), str(tiny_model_dir), cache_dir=cache)


def _train(data, model_dir, tmp_path, epochs=4, measure_latency=False, **values):
    reports = []
    trial_config = {
        "train.learning_rate": 2e-3,
        "train.batch_size": 16,
        "train.effective_batch_size": 16,
        "train.max_length": 32,
        **values,
    }
    settings = TrialSettings(
        model=str(model_dir),
        max_epochs=epochs,
        precision="fp32",
        checkpoint_dir=str(tmp_path / "work"),
        measure_latency=measure_latency,
    )
    result = run_trial(trial_config, data, lambda m, c: reports.append((m, c)), settings=settings)
    return result, reports


def test_trial_improves_and_keeps_its_best_checkpoint(tiny_data, tiny_model_dir, tmp_path):
    result, reports = _train(tiny_data, tiny_model_dir, tmp_path)
    scores = [m[config.VAL_MACRO_F1] for m, _ in reports]
    assert [m[config.EPOCH] for m, _ in reports] == [1, 2, 3, 4]
    assert max(scores[1:]) > scores[0] + 0.05, scores
    for metrics, _ in reports:
        for key in (
            config.VAL_F1_WEIGHTED,
            config.VAL_ACCURACY,
            config.VAL_LOSS,
            config.TRAIN_SAMPLES_PER_S,
            config.VAL_PRECISION_PREFIX + "positive",
            config.VAL_RECALL_PREFIX + "negative",
        ):
            assert key in metrics
        assert metrics[config.TRAIN_SAMPLES_PER_S] > 0
    # A checkpoint is handed over exactly when the epoch is the best so far.
    running_best = -1.0
    for metrics, checkpoint in reports:
        improved = metrics[config.VAL_MACRO_F1] > running_best
        assert (checkpoint is not None) == improved
        running_best = max(running_best, metrics[config.VAL_MACRO_F1])
    assert result.best[config.VAL_MACRO_F1] == max(scores)
    # The kept checkpoint is the best epoch's: reloading it reproduces that epoch's score.
    model = load_model(result.checkpoint_dir).eval()
    val = tiny_data.validation
    preds = []
    with torch.no_grad():
        for indices in sorted_batches(val.lengths, 64):
            batch = collate(
                [val.truncated(32)[i] for i in indices],
                val.labels[indices],
                pad_id=tiny_data.pad_id,
            )
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            preds.append((indices, logits.argmax(-1).numpy()))
    predicted = np.empty(len(val), dtype=np.int64)
    for indices, p in preds:
        predicted[indices] = p
    score = compute_metrics(val.labels, predicted, list(tiny_data.label_names))[config.VAL_MACRO_F1]
    assert score == pytest.approx(result.best[config.VAL_MACRO_F1], abs=1e-6)
    assert (result.checkpoint_dir / "tokenizer_config.json").is_file()


def test_trial_is_repeatable_with_its_seed(tiny_data, tiny_model_dir, tmp_path):
    _, first = _train(tiny_data, tiny_model_dir, tmp_path / "a", epochs=1)
    _, second = _train(tiny_data, tiny_model_dir, tmp_path / "b", epochs=1)
    assert first[0][0][config.VAL_MACRO_F1] == second[0][0][config.VAL_MACRO_F1]
    assert first[0][0][config.VAL_LOSS] == pytest.approx(second[0][0][config.VAL_LOSS], rel=1e-6)


def test_eval_every_steps_reports_fractional_epochs(tiny_data, tiny_model_dir, tmp_path):
    steps_per_epoch = math.ceil(len(tiny_data.train) / 16)
    every = steps_per_epoch // 2
    _, reports = _train(
        tiny_data, tiny_model_dir, tmp_path, epochs=1, **{"train.eval_every_steps": every}
    )
    epochs = [m[config.EPOCH] for m, _ in reports]
    assert epochs[0] == pytest.approx(every / steps_per_epoch, abs=1e-3)
    assert epochs[-1] == 1


def test_each_optimizer_step_says_where_its_epoch_stands(tiny_data, tiny_model_dir, tmp_path):
    steps = []
    settings = TrialSettings(
        model=str(tiny_model_dir), max_epochs=2, precision="fp32", checkpoint_dir=str(tmp_path)
    )
    trial_config = {"train.batch_size": 8, "train.effective_batch_size": 16}
    run_trial(trial_config, tiny_data, lambda m, c: None, settings=settings, on_step=steps.append)
    batches = math.ceil(len(tiny_data.train) / 8)
    per_epoch = math.ceil(batches / 2)  # two micro-batches per optimizer step
    assert len(steps) == 2 * per_epoch
    first, second = steps[:per_epoch], steps[per_epoch:]
    assert [s.epoch for s in first] == [1] * per_epoch and [s.epoch for s in second] == [
        2
    ] * per_epoch
    assert [s.batches_done for s in first] == [min(2 * i, batches) for i in range(1, per_epoch + 1)]
    assert {s.batches for s in steps} == {batches}


def test_accumulation_counts_optimizer_steps(tiny_data, tiny_model_dir, tmp_path):
    _, reports = _train(
        tiny_data,
        tiny_model_dir,
        tmp_path,
        epochs=1,
        **{"train.batch_size": 8, "train.effective_batch_size": 32},
    )
    assert reports[-1][0]["step"] == math.ceil(math.ceil(len(tiny_data.train) / 8) / 4)


def test_head_tail_trial_feeds_the_first_and_last_tokens(
    tiny_data, tiny_model_dir, tmp_path, monkeypatch
):
    from sentune.data.batching import truncate
    from sentune.train import evaluate, trial

    fed = []
    real_collate, real_pad = trial.collate, evaluate.pad_batch

    def recording_collate(ids, labels, **options):  # training batches
        fed.extend(tuple(x.tolist()) for x in ids)
        return real_collate(ids, labels, **options)

    def recording_pad(ids, *, pad_id):  # evaluation batches
        fed.extend(tuple(x.tolist()) for x in ids)
        return real_pad(ids, pad_id=pad_id)

    monkeypatch.setattr(trial, "collate", recording_collate)
    monkeypatch.setattr(evaluate, "pad_batch", recording_pad)
    _train(
        tiny_data,
        tiny_model_dir,
        tmp_path,
        epochs=1,
        **{"train.max_length": 6, "train.truncation": "head_tail"},
    )
    every = [*tiny_data.train.input_ids, *tiny_data.validation.input_ids]
    head_tail = {tuple(truncate(x, 6, "head_tail").tolist()) for x in every}
    head = {tuple(truncate(x, 6, "head").tolist()) for x in every}
    assert fed and set(fed) <= head_tail
    assert set(fed) - head  # the cut differs from the head-only one
    assert len(fed) == len(tiny_data.train) + len(tiny_data.validation)


def test_training_batches_cover_each_example_once_and_group_lengths(tiny_data):
    split = tiny_data.train
    train = TrainConfig(batch_size=16, max_length=32)
    batches = training_batches(split, train, rng=np.random.default_rng(0))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(split)))
    lengths = np.minimum(split.lengths, 32)
    grouped_padding = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(split))
    random_batches = [order[i : i + 16] for i in range(0, len(order), 16)]
    random_padding = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in random_batches)
    assert grouped_padding < random_padding


def test_oversampling_balances_classes(tiny_data):
    split = tiny_data.train
    train = TrainConfig(batch_size=16, imbalance="oversample")
    batches = training_batches(split, train, rng=np.random.default_rng(0))
    drawn = np.concatenate([split.labels[b] for b in batches])
    assert len(drawn) == len(split)
    shares = np.bincount(drawn) / len(drawn)
    assert np.bincount(split.labels).min() / len(split) < 0.25
    assert shares.min() > 0.28


def test_evaluation_batches_are_length_sorted(tiny_data):
    split = tiny_data.validation
    batches = sorted_batches(split.lengths, 8)
    longest = [split.lengths[b].max() for b in batches]
    assert longest == sorted(longest, reverse=True)
    assert sorted(i for b in batches for i in b) == list(range(len(split)))


def test_no_weight_decay_on_bias_and_layernorm(tiny_model_dir):
    model = build_model(
        str(tiny_model_dir), config.HeadConfig(layers=1, width=8), label_names=["a", "b"]
    )
    decay, no_decay = parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(not names[id(p)].endswith("bias") for p in decay["params"])
    assert all("LayerNorm" not in names[id(p)] for p in decay["params"])
    assert any("LayerNorm.weight" in names[id(p)] for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_warmup_then_linear_decay():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = linear_warmup_decay(optimizer, 0.2, 10)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.5) and rates[1] == pytest.approx(1.0)
    assert rates[2:] == sorted(rates[2:], reverse=True)
    assert rates[-1] == pytest.approx(1 / 8)


def test_precision_resolution_on_cpu(monkeypatch):
    import sentune.train.device as device

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(device.ResourceError, match="no native bf16"):
        resolve_precision("bf16", "cpu")
    with pytest.raises(device.ResourceError, match="needs a CUDA GPU"):
        resolve_precision("fp16", "cpu")
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"


def test_bf16_trial_runs_where_the_cpu_has_it(tiny_data, tiny_model_dir, tmp_path):
    from sentune.machine import cpu_has_bf16

    if not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16")
    reports = []
    settings = TrialSettings(
        model=str(tiny_model_dir), max_epochs=1, precision="bf16", checkpoint_dir=str(tmp_path)
    )
    run_trial(
        {"train.max_length": 32}, tiny_data, lambda m, c: reports.append(m), settings=settings
    )
    assert reports[0]["precision"] == "bf16"
    assert math.isfinite(reports[0][config.VAL_LOSS])


def test_metrics_by_name():
    labels = np.array([0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 2])
    metrics = compute_metrics(labels, preds, ["neg", "neu", "pos"])
    assert metrics[config.VAL_ACCURACY] == pytest.approx(0.8)
    assert metrics[config.VAL_RECALL_PREFIX + "neg"] == pytest.approx(0.5)
    assert metrics[config.VAL_PRECISION_PREFIX + "neu"] == pytest.approx(2 / 3)
    assert metrics[config.VAL_MACRO_F1] == pytest.approx((2 / 3 + 0.8 + 1.0) / 3)


def test_resumable_trial_continues_from_its_checkpoint_as_if_never_stopped(
    tiny_data, tiny_model_dir, tmp_path
):
    from sentune.runs import STATE_FILE, TRAINING_STATE_FILE

    settings = _resumable(tiny_model_dir, tmp_path, max_epochs=2)
    trial_config = {"train.learning_rate": 2e-3, "train.max_length": 32, "head.dropout": 0.2}
    reports, kept = _run_keeping_checkpoints(tiny_data, settings, trial_config, tmp_path)
    assert len(reports) == 2
    assert (kept[0] / TRAINING_STATE_FILE).is_file() and (kept[0] / STATE_FILE).is_file()
    # The last evaluation hands over a checkpoint only when it is the best, and nothing
    # continues after it: no training state.
    if reports[1][config.VAL_MACRO_F1] > reports[0][config.VAL_MACRO_F1]:
        assert not (kept[1] / TRAINING_STATE_FILE).exists()
    else:
        assert kept[1] is None

    resumed = []
    result = run_trial(
        trial_config,
        tiny_data,
        lambda m, c: resumed.append(m),
        settings=replace(settings, checkpoint_dir=str(tmp_path / "again")),
        resume_from=kept[0],
    )
    assert [m[config.EPOCH] for m in resumed] == [2]
    assert resumed[0]["step"] == reports[1]["step"]
    assert resumed[0][config.VAL_LOSS] == pytest.approx(reports[1][config.VAL_LOSS], rel=1e-5)
    assert resumed[0][config.VAL_MACRO_F1] == reports[1][config.VAL_MACRO_F1]
    # The best-so-far and history travel with the checkpoint.
    assert len(result.history) == 2
    assert result.best[config.VAL_MACRO_F1] == max(m[config.VAL_MACRO_F1] for m in reports)


def _resumable(tiny_model_dir, tmp_path, *, max_epochs: int) -> TrialSettings:
    return TrialSettings(
        model=str(tiny_model_dir),
        max_epochs=max_epochs,
        precision="fp32",
        checkpoint_dir=str(tmp_path / "work"),
        resumable=True,
    )


def _run_keeping_checkpoints(tiny_data, settings, trial_config, folder):
    """Run a trial; return its reports and a copy of each checkpoint it handed over (valid
    only until the next report; None where it handed none)."""
    import shutil

    reports, kept = [], []

    def report(metrics, checkpoint):
        reports.append(metrics)
        copy = folder / f"epoch{metrics[config.EPOCH]}"
        kept.append(shutil.copytree(checkpoint, copy) if checkpoint is not None else None)

    run_trial(trial_config, tiny_data, report, settings=settings)
    return reports, kept


def test_the_last_epoch_leaves_no_training_state_and_a_retry_from_it_trains_nothing(
    tiny_data, tiny_model_dir, tmp_path
):
    from sentune.runs import STATE_FILE, TRAINING_STATE_FILE

    settings = _resumable(tiny_model_dir, tmp_path, max_epochs=1)
    trial_config = {"train.learning_rate": 2e-3, "train.max_length": 32}
    reports, kept = _run_keeping_checkpoints(tiny_data, settings, trial_config, tmp_path)
    # One epoch: its evaluation is the last and the best.
    (final,) = kept
    assert not (final / TRAINING_STATE_FILE).exists()
    assert json.loads((final / STATE_FILE).read_text())["final"] is True
    # The predictions saved beside it give the report exactly the score the trial reported.
    confusion = checkpoint_confusion(str(final), tiny_data, trial_id="t", max_length=32)
    assert confusion.val_macro_f1 == reports[0][config.VAL_MACRO_F1]

    again = []
    result = run_trial(
        trial_config,
        tiny_data,
        lambda metrics, checkpoint: again.append(metrics),
        settings=replace(settings, checkpoint_dir=str(tmp_path / "again")),
        resume_from=final,
    )
    assert again == []
    assert result.best[config.VAL_MACRO_F1] == reports[0][config.VAL_MACRO_F1]


def test_a_last_epoch_that_is_not_the_best_hands_over_no_checkpoint(
    tiny_data, tiny_model_dir, tmp_path
):
    from sentune.runs import TRAINING_STATE_FILE

    settings = _resumable(tiny_model_dir, tmp_path, max_epochs=2)
    # The smallest learning rate allowed: the weights hardly move, so epoch 2 scores what
    # epoch 1 did and is not an improvement.
    trial_config = {"train.learning_rate": 1e-8, "train.max_length": 32, "head.dropout": 0.0}
    reports, kept = _run_keeping_checkpoints(tiny_data, settings, trial_config, tmp_path)
    assert reports[1][config.VAL_MACRO_F1] == reports[0][config.VAL_MACRO_F1]
    assert kept[1] is None
    assert (kept[0] / TRAINING_STATE_FILE).is_file()


def test_out_of_memory_says_what_to_shrink(tiny_data, tiny_model_dir, tmp_path):
    from sentune.train.trial import TrialOutOfMemory

    def out_of_memory(metrics, checkpoint):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test)")

    settings = TrialSettings(
        model=str(tiny_model_dir), max_epochs=1, precision="fp32", checkpoint_dir=str(tmp_path)
    )
    with pytest.raises(TrialOutOfMemory, match="lower train.batch_size and keep"):
        run_trial(
            {"train.max_length": 32},
            tiny_data,
            out_of_memory,
            settings=settings,
        )


def test_a_latency_aware_trial_measures_once_and_reports_it_every_epoch(
    tiny_data, tiny_model_dir, tmp_path, monkeypatch
):
    pytest.importorskip("onnxruntime")
    from sentune.serve import engines

    calls = []
    measure = engines.measure_latency

    def counted(model, *args, **kwargs):
        calls.append((len(model.encoder.encoder.layer), kwargs["int8"]))
        return measure(model, *args, **kwargs)

    monkeypatch.setattr(engines, "measure_latency", counted)
    values = {"model.encoder_layers": 1, "serve.int8": True}
    _, reports = _train(
        tiny_data, tiny_model_dir, tmp_path, epochs=2, measure_latency=True, **values
    )
    assert calls == [(1, True)]  # once, on the truncated model, as int8
    first, second = (m for m, _ in reports)
    for metric in config.INFERENCE_METRICS:
        assert first[metric] == second[metric] > 0
    # Without the switch no trial pays for it.
    _, plain = _train(tiny_data, tiny_model_dir, tmp_path / "plain", epochs=1)
    assert config.LATENCY_P95_MS not in plain[0][0] and len(calls) == 1


def test_out_of_memory_while_packed_says_to_lower_the_packing(tiny_data, tiny_model_dir, tmp_path):
    from sentune.train.trial import TrialOutOfMemory

    def out_of_memory(metrics, checkpoint):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test)")

    settings = TrialSettings(
        model=str(tiny_model_dir),
        max_epochs=1,
        precision="fp32",
        checkpoint_dir=str(tmp_path),
        gpus_per_trial=0.25,
    )
    with pytest.raises(TrialOutOfMemory, match="4 trials sharing a GPU") as caught:
        run_trial({"train.max_length": 32}, tiny_data, out_of_memory, settings=settings)
    assert "--gpus-per-trial 1" in str(caught.value) and "\n" not in str(caught.value)
    # Raised without the original error chained: its traceback would keep the model alive.
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def _live_models() -> int:
    import gc

    from sentune.train.model import SentimentModel

    gc.collect()
    return sum(type(o) is SentimentModel for o in gc.get_objects())


def test_a_finished_or_failed_trial_leaves_no_model_behind(tiny_data, tiny_model_dir, tmp_path):
    from sentune.train.trial import TrialOutOfMemory

    before = _live_models()
    _train(tiny_data, tiny_model_dir, tmp_path, epochs=1)
    assert _live_models() == before

    def out_of_memory(metrics, checkpoint):
        raise torch.OutOfMemoryError("CUDA out of memory (test)")

    settings = TrialSettings(model=str(tiny_model_dir), max_epochs=1, precision="fp32")
    with pytest.raises(TrialOutOfMemory):
        run_trial({"train.max_length": 32}, tiny_data, out_of_memory, settings=settings)
    assert _live_models() == before


def test_reports_say_when_training_began(tiny_data, tiny_model_dir, tmp_path):
    import time

    reports = []
    started = time.time() - 5.0  # as if the command had started 5 s before the trial
    settings = TrialSettings(
        model=str(tiny_model_dir),
        max_epochs=2,
        precision="fp32",
        checkpoint_dir=str(tmp_path),
        started_at=started,
    )
    run_trial(
        {"train.max_length": 32}, tiny_data, lambda m, c: reports.append(m), settings=settings
    )
    first = reports[0]
    assert 0 < first[config.TRIAL_SETUP_S] < first[config.FIRST_STEP_S]
    assert first[config.FIRST_STEP_S] >= 5.0
    # The same moment in every report of the trial.
    assert reports[1][config.FIRST_STEP_S] == first[config.FIRST_STEP_S]


def test_compiled_trials_see_few_shapes_and_filler_rows_change_nothing(
    tiny_data, tiny_model_dir, tmp_path, monkeypatch
):
    """`train.compile` pads batches to length buckets and full rows; the compile itself is
    replaced by a recorder (compiling on this CPU would take longer than the test)."""
    from sentune.train import trial

    shapes, modes = set(), []

    def recording_compile(model, mode):
        modes.append(mode)

        def forward(**inputs):
            shapes.add((tuple(inputs["input_ids"].shape), model.training))
            return model(**inputs)

        forward.config = model.config
        return forward

    monkeypatch.setattr(trial, "compile_model", recording_compile)
    result, _ = _train(tiny_data, tiny_model_dir, tmp_path, epochs=2, **{"train.compile": True})
    assert result.best
    # Training batches of 16 rows and evaluation batches of 32, each 32 tokens wide (one bucket).
    assert shapes == {((16, 32), True), ((32, 32), False)}
    assert modes == ["default"]  # `auto`: CUDA graphs are for CUDA devices only

    # A filler row (label IGNORE_LABEL) leaves the loss as it was.
    model = build_model(str(tiny_model_dir), config.HeadConfig(), label_names=["a", "b", "c"])
    model.eval()
    ids = [np.array([2, 7, 8, 3]), np.array([2, 9, 3])]
    labels = np.array([0, 2])
    plain = collate(ids, labels, pad_id=0)
    static = collate(ids, labels, pad_id=0, static_max_length=64, rows=4)
    assert static.input_ids.shape == (4, 32) and static.labels.tolist() == [0, 2, -100, -100]
    with torch.no_grad():
        losses = [
            model(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels).loss
            for b in (plain, static)
        ]
    assert torch.allclose(losses[0], losses[1], atol=1e-6)


def test_compile_mode_auto_means_cuda_graphs_on_cuda_only():
    from sentune.train.device import compile_mode

    assert compile_mode("auto", "cuda") == "reduce-overhead"
    assert compile_mode("auto", "cpu") == "default"
    assert compile_mode("default", "cuda") == "default"
    with pytest.raises(SentuneError, match="use one of auto, default, reduce-overhead"):
        compile_mode("max-autotune", "cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiles in seconds on a GPU only")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_trial_trains_on_a_gpu(tiny_data, tiny_model_dir, tmp_path, mode):
    # Two micro-batches per step (accumulation) and two length buckets.
    settings = {
        "train.compile": True,
        "train.compile_mode": mode,
        "train.max_length": 64,
        "train.effective_batch_size": 32,
    }
    result, _ = _train(tiny_data, tiny_model_dir, tmp_path, epochs=2, **settings)
    assert result.best[config.VAL_MACRO_F1] > 0


def test_a_trial_reaches_its_first_step_without_scikit_learn(tiny_data, tiny_model_dir, tmp_path):
    """scikit-learn (with SciPy: a second or more) is imported at the first evaluation, not
    before the first training step: a trial's worker imports what `search._trainable` and
    `run_trial` need, and seconds there delay every trial's start. In a fresh process, given
    the prepared data as the worker gets it (pickled), since this one has imported everything."""
    import pickle
    import subprocess
    import sys

    (tmp_path / "data.pkl").write_bytes(pickle.dumps(tiny_data))
    code = f"""
import json, pickle, sys
from pathlib import Path
import torch
from sentune import search  # the worker unpickles the trainable from here
from sentune.config import TrialSettings
from sentune.train.trial import run_trial

seen = []
step = torch.optim.AdamW.step
def first_step(self, *args, **kwargs):
    seen.append("sklearn" in sys.modules)
    return step(self, *args, **kwargs)
torch.optim.AdamW.step = first_step
data = pickle.loads(Path({str(tmp_path / "data.pkl")!r}).read_bytes())
settings = TrialSettings(model={str(tiny_model_dir)!r}, max_epochs=1, precision="fp32",
                         checkpoint_dir={str(tmp_path / "work")!r})
config = {{"train.batch_size": 16, "train.effective_batch_size": 16, "train.max_length": 32}}
run_trial(config, data, lambda metrics, checkpoint: None, settings=settings)
print(json.dumps([seen[0], "sklearn" in sys.modules]))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    at_first_step, after_evaluation = json.loads(out.strip().splitlines()[-1])
    assert not at_first_step
    assert after_evaluation  # the metrics did import it: the check above can see it
