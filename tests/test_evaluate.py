"""evaluate.py: the metrics (one name each), the TF-IDF floor and a checkpoint's confusion."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from sentune import config, runs
from sentune.config import DataConfig
from sentune.data import load_splits, prepare
from sentune.runs import DataRecord, Manifest, SpaceRecord
from sentune.train.evaluate import (
    build_floor_model,
    compute_metrics,
    reference_floor,
    split_scores,
)


def test_metrics_are_named_once_per_split():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    val = compute_metrics(labels, preds, ["neg", "neu", "pos"])
    assert val[config.VAL_MACRO_F1] == pytest.approx(f1_score(labels, preds, average="macro"))
    assert val[config.VAL_ACCURACY] == pytest.approx(accuracy_score(labels, preds))
    assert val[config.VAL_PRECISION_PREFIX + "neu"] == pytest.approx(2 / 3)
    assert val[config.VAL_RECALL_PREFIX + "neg"] == pytest.approx(0.5)
    test = split_scores(labels, preds, ["neg", "neu", "pos"], split=config.TEST)
    assert test[config.metric_name(config.TEST, config.MACRO_F1)] == val[config.VAL_MACRO_F1]
    assert test["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert test["support"] == {"neg": 2, "neu": 2, "pos": 2}
    assert not any(key.startswith("val_") for key in test)


def _manifest(tiny_csv, tiny_model_dir, fingerprint: str | None = None) -> Manifest:
    cfg = DataConfig(dataset=str(tiny_csv))
    _, stats = load_splits(cfg)
    return Manifest(
        run="csv-20260101-000000",
        started="2026-01-01T00:00:00",
        space=SpaceRecord(name="csv", path="csv.yaml", text=""),
        model="tiny",
        model_path=str(tiny_model_dir),
        data=DataRecord(
            config=cfg,
            fingerprint=fingerprint or stats["fingerprint"],
            label_names=stats["label_names"],
            stats=stats,
        ),
        budget=config.BudgetConfig(),
        settings=config.TrialSettings(),
    )


def test_floor_is_tfidf_logistic_regression_on_the_same_splits(tiny_csv, tiny_model_dir, tmp_path):
    manifest = _manifest(tiny_csv, tiny_model_dir)
    data = runs.load_data(manifest, cache_dir=tmp_path / "cache")
    floor = reference_floor(data, recorded_fingerprint=manifest.data.fingerprint)
    frames, _ = load_splits(manifest.data.config)
    model = build_floor_model().fit(frames["train"]["text"], frames["train"]["label"])
    direct = f1_score(
        frames["validation"]["label"], model.predict(frames["validation"]["text"]), average="macro"
    )
    assert floor.val_macro_f1 == pytest.approx(direct)
    assert floor.train_size == len(frames["train"])
    assert floor.val_size == len(frames["validation"])
    assert floor.fingerprint_matches


def test_a_changed_source_is_refused_or_flagged(tiny_csv, tiny_model_dir, tmp_path, caplog):
    from sentune.errors import RunError

    manifest = _manifest(tiny_csv, tiny_model_dir, fingerprint="stale")
    with pytest.raises(RunError, match="the data changed since the search"):
        runs.load_data(manifest, cache_dir=tmp_path / "cache")
    with caplog.at_level("WARNING", logger="sentune.runs"):
        data = runs.load_data(manifest, cache_dir=tmp_path / "cache", allow_changed=True)
    assert "the source changed" in caplog.text
    assert not reference_floor(data, recorded_fingerprint="stale").fingerprint_matches


def test_checkpoint_confusion_scores_the_validation_split(tiny_csv, tiny_model_dir, tmp_path):
    from sentune.train.evaluate import checkpoint_confusion
    from sentune.train.model import build_model

    data = prepare(DataConfig(dataset=str(tiny_csv)), str(tiny_model_dir), cache_dir=tmp_path)
    model = build_model(str(tiny_model_dir), config.HeadConfig(), label_names=data.label_names)
    model.save_pretrained(tmp_path / "ckpt")
    confusion = checkpoint_confusion(str(tmp_path / "ckpt"), data, trial_id="t", max_length=16)
    assert int(confusion.matrix.to_numpy().sum()) == len(data.validation)
    assert confusion.per_class["support"].sum() == len(data.validation)
    assert 0.0 <= confusion.val_macro_f1 <= 1.0


def test_checkpoint_confusion_reads_the_predictions_saved_with_the_checkpoint(
    tiny_csv, tiny_model_dir, tmp_path, monkeypatch, caplog
):
    """A trial saves its validation predictions beside the weights: the report reads them
    instead of loading the model (minutes on a CPU for BERT-base), unless they are of another
    validation split."""
    from sentune.train import model as model_module
    from sentune.train.evaluate import checkpoint_confusion, save_predictions
    from sentune.train.model import build_model

    data = prepare(DataConfig(dataset=str(tiny_csv)), str(tiny_model_dir), cache_dir=tmp_path)
    checkpoint = tmp_path / "ckpt"
    build_model(
        str(tiny_model_dir), config.HeadConfig(), label_names=data.label_names
    ).save_pretrained(checkpoint)
    labels = data.validation.labels
    everything_first = np.zeros_like(labels)
    save_predictions(checkpoint, labels, everything_first)
    loads = []
    real_load = model_module.load_model
    monkeypatch.setattr(
        model_module, "load_model", lambda path: loads.append(path) or real_load(path)
    )

    confusion = checkpoint_confusion(str(checkpoint), data, trial_id="t", max_length=16)
    assert loads == []
    first = data.label_names[0]
    assert confusion.matrix[first].sum() == len(labels)  # every text predicted as the first label
    assert confusion.matrix.drop(columns=first).to_numpy().sum() == 0

    # Predictions of another split (here: its labels shuffled) are not taken for this one's.
    other = np.random.default_rng(0).permutation(labels)
    assert not np.array_equal(other, labels)
    save_predictions(checkpoint, other, everything_first)
    with caplog.at_level("WARNING", logger="sentune.train.evaluate"):
        confusion = checkpoint_confusion(str(checkpoint), data, trial_id="t", max_length=16)
    assert loads == [str(checkpoint)]
    assert "another validation split" in caplog.text
    assert int(confusion.matrix.to_numpy().sum()) == len(labels)


def test_bootstrap_interval_is_seeded_and_holds_the_point_estimate():
    from sentune.train.evaluate import bootstrap_interval

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    preds = np.where(rng.random(300) < 0.7, labels, rng.integers(0, 3, 300))
    for metric, point in (
        (config.MACRO_F1, f1_score(labels, preds, average="macro")),
        (config.ACCURACY, accuracy_score(labels, preds)),
    ):
        interval = bootstrap_interval(labels, preds, metric, n=200, seed=0)
        assert interval.low < point < interval.high
        assert interval.high - interval.low < 0.2  # 300 examples: a few points either side
        assert interval == bootstrap_interval(labels, preds, metric, n=200, seed=0)
        assert interval != bootstrap_interval(labels, preds, metric, n=200, seed=1)
    perfect = bootstrap_interval(labels, labels, config.MACRO_F1, n=50)
    assert perfect.low == perfect.high == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_scikit_learn_with_absent_classes(seed):
    from sentune.train.evaluate import score

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, 40)  # class 3 never occurs; class 2 may never be predicted
    preds = np.where(rng.random(40) < 0.5, labels, rng.integers(0, 2, 40))
    ids = [0, 1, 2, 3]
    assert score(config.MACRO_F1, labels, preds, ids) == pytest.approx(
        f1_score(labels, preds, labels=ids, average="macro", zero_division=0)
    )
    assert score(config.F1_WEIGHTED, labels, preds, ids) == pytest.approx(
        f1_score(labels, preds, labels=ids, average="weighted", zero_division=0)
    )
    assert score(config.ACCURACY, labels, preds, ids) == pytest.approx(
        accuracy_score(labels, preds)
    )
