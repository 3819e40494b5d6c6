"""Serve an export: labels and calibrated probabilities on onnxruntime, and what a model's
inference engines cost.

Modules, one job each: `predict` (an export's `Predictor`, tables in and out; never imports
torch), `onnx` (the export's file names, onnxruntime sessions), `engines` (ONNX and int8 files
written from a PyTorch model, the latency/throughput timing that trials and the export share;
needs torch).
"""

from sentune.lazy import lazy_exports

#: Each public name and the module that defines it: imported on first use (PEP 562), so that
#: `sentune predict` imports `predict` and `onnx` only, never torch through `engines`.
_PUBLIC = {
    "ONNX_OPSET": "engines",
    "Engine": "engines",
    "Latency": "engines",
    "LogitsOnly": "engines",
    "dynamic_shapes": "engines",
    "export_sample": "engines",
    "measure_latency": "engines",
    "quiet": "engines",
    "session_engine": "engines",
    "summarize": "engines",
    "time_engine": "engines",
    "timed": "engines",
    "timing_batches": "engines",
    "write_int8": "engines",
    "write_onnx": "engines",
    "EXPORT_MANIFEST": "onnx",
    "INT8_FILE": "onnx",
    "ONNX_FILE": "onnx",
    "ONNX_INPUTS": "onnx",
    "TOKENIZER_FILE": "onnx",
    "build_session": "onnx",
    "import_onnxruntime": "onnx",
    "run_session": "onnx",
    "softmax": "onnx",
    "DEFAULT_BATCH_SIZE": "predict",
    "LABEL_COLUMN": "predict",
    "OUTPUT_FORMATS": "predict",
    "PROBABILITY_PREFIX": "predict",
    "TABLE_SUFFIXES": "predict",
    "Predictions": "predict",
    "Predictor": "predict",
    "Table": "predict",
    "empty_rows": "predict",
    "format_table": "predict",
    "predict_table": "predict",
    "read_export_manifest": "predict",
    "read_table": "predict",
    "table_texts": "predict",
    "write_table": "predict",
}

__all__ = sorted(_PUBLIC)


__getattr__ = lazy_exports(__name__, _PUBLIC)
