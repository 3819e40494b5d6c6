"""ONNX and int8 ONNX from a model trained at any precision: a bf16 trial's timed copy, and a model
exported inside an autocast block, are fp32 graphs that onnxruntime's CPU provider runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sentune import config
from sentune.config import DataConfig, HeadConfig, TrialSettings
from sentune.data import prepare
from sentune.errors import ExportError
from sentune.serve import engines
from sentune.train.model import build_model
from sentune.train.trial import run_trial

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")


def _ids(n: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [np.array([2, *rng.integers(5, 30, size=6), 3], dtype=np.int64) for _ in range(n)]


def test_a_bf16_trial_measures_its_latency_on_an_fp32_onnx_graph(
    tiny_csv, tiny_model_dir, tmp_path, monkeypatch
):
    # bf16 on any CPU: torch emulates it where the CPU lacks the instructions (slower, same math).
    monkeypatch.setattr("sentune.train.device.cpu_has_bf16", lambda: True)
    data = prepare(DataConfig(dataset=str(tiny_csv)), str(tiny_model_dir), cache_dir=tmp_path)
    settings = TrialSettings(
        model=str(tiny_model_dir),
        max_epochs=1,
        precision="bf16",
        checkpoint_dir=str(tmp_path / "work"),
        measure_latency=True,
    )
    reports = []
    trial_config = {
        "train.batch_size": 16,
        "train.effective_batch_size": 16,
        "train.max_length": 32,
    }
    run_trial(trial_config, data, lambda m, c: reports.append(m), settings=settings)
    (metrics,) = reports
    assert metrics["precision"] == "bf16"
    for metric in config.INFERENCE_METRICS:
        assert metrics[metric] > 0


def test_an_export_inside_autocast_writes_fp32_onnx_and_int8(tiny_model_dir, tmp_path):
    model = build_model(str(tiny_model_dir), HeadConfig(), label_names=["a", "b", "c"]).eval()
    sample = engines.timing_batches(_ids(), 0, count=1, batch_size=2)[0]
    path = tmp_path / "model.onnx"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        engines.write_onnx(engines.LogitsOnly(model), path, sample)
    engines.check_fp32_graph(path)  # raises on any 16-bit tensor
    engines.write_int8(path, tmp_path / "model.int8.onnx")
    for file in (path, tmp_path / "model.int8.onnx"):
        logits = engines.session_engine(file, threads=1)(*sample)
        assert logits.dtype == np.float32 and logits.shape == (2, 3)
    # The model itself is left as it was: parameters in fp32, forward untouched.
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_a_graph_with_16_bit_tensors_is_refused_with_the_reason(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("MatMul", ["a", "b"], ["c"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.BFLOAT16, [2, 2]) for n in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.BFLOAT16, [2, 2])],
    )
    path = tmp_path / "bf16.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ExportError, match="bfloat16") as caught:
        engines.check_fp32_graph(path)
    assert "\n" not in str(caught.value)
