"""onnxruntime's side of serving: the export folder's file names, the graph's inputs, a CPU
session, a batch run through it and the softmax over its logits.

No torch: `serve.predict` serves with these and `serve.engines` times the export's models with
them. onnxruntime comes with the `export` extra (`pip install 'sentune[export]'`);
`import_onnxruntime` says so when it is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sentune.errors import ExportError

#: Files of an export folder that inference reads.
EXPORT_MANIFEST = "export.json"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
#: Input names of the exported ONNX graph, in order.
ONNX_INPUTS = ("input_ids", "attention_mask")


def import_onnxruntime():
    """onnxruntime, or an error that says how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(
            "onnxruntime is not installed; install the export extra: pip install 'sentune[export]'"
        ) from None
    return onnxruntime


def build_session(path: str | Path, *, threads: int | None = None):
    """An onnxruntime CPU session with `threads` intra-op threads (None: the CPU count)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_session(session, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Logits of one padded batch (int64 inputs of shape (batch, length))."""
    feeds = dict(zip(ONNX_INPUTS, (input_ids, attention_mask), strict=True))
    return session.run(None, feeds)[0]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed stably in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
