"""Inference cost of a model: ONNX / int8 ONNX timing on the tiny model, and its timing batches."""

from __future__ import annotations

import numpy as np
import pytest

from sentune import config
from sentune.config import HeadConfig
from sentune.serve.engines import Latency, measure_latency, summarize, timing_batches
from sentune.train.model import build_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _ids(n: int = 40, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        np.array([2, *rng.integers(5, 30, size=rng.integers(3, 20)), 3], dtype=np.int64)
        for _ in range(n)
    ]


def test_timing_batches_cycle_through_the_texts_and_pad_each_batch():
    ids = _ids(5)
    batches = timing_batches(ids, 0, count=3, batch_size=4)
    assert len(batches) == 3
    input_ids, mask = batches[1]
    assert input_ids.shape[0] == 4 and mask.shape == input_ids.shape
    # The second batch holds texts 4, 0, 1, 2: the list cycles.
    assert list(input_ids[1][: len(ids[0])]) == list(ids[0])
    with pytest.raises(ValueError):
        timing_batches([], 0, count=1)


def test_summarize_gives_percentiles_and_texts_per_second():
    p50, p95, throughput = summarize(np.array([1.0, 2.0, 3.0, 100.0]), np.array([500.0, 500.0]))
    assert p50 == 2.5 and 3.0 < p95 < 100.0
    assert throughput == pytest.approx(config.LATENCY_BATCH_SIZE * 2 / 1.0)


def test_latency_of_the_tiny_model_is_measured_on_onnx_and_int8(tiny_model_dir):
    # One test for both engines: each ONNX export of even the tiny model takes seconds.
    model = build_model(str(tiny_model_dir), HeadConfig(), label_names=["a", "b", "c"])
    fp32 = measure_latency(model, _ids(), 0, threads=1)
    int8 = measure_latency(model, _ids(), 0, int8=True, threads=1)
    for latency, engine in ((fp32, "onnx"), (int8, "int8")):
        assert isinstance(latency, Latency)
        assert latency.engine == engine and latency.threads == 1
        assert 0 < latency.p50_ms <= latency.p95_ms < 1000
        assert latency.throughput_b32 > 0
        assert 0 < latency.model_mb < 5
        assert set(latency.metrics()) == set(config.INFERENCE_METRICS)
    assert int8.model_mb < fp32.model_mb
