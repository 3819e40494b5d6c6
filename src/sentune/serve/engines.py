"""A model's inference engines and what they cost: ONNX and int8 ONNX files, their sessions,
and the one latency/throughput timing that trials and the export share.

`export` writes and benchmarks the winner with these; a trial of a latency-aware search calls
`measure_latency` once on its first checkpoint (the cost depends on the architecture, encoder
layers kept, max_length, head depth, int8, not on the weights), so every trial, ASHA-stopped
ones too, carries `config.INFERENCE_METRICS`.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from sentune import config
from sentune.data.batching import pad_batch
from sentune.errors import ExportError
from sentune.serve.onnx import ONNX_INPUTS, build_session, import_onnxruntime, run_session

log = logging.getLogger(__name__)

#: onnxruntime runs opset 18 everywhere it is still supported.
ONNX_OPSET = 18
#: `logits(input_ids, attention_mask)` of one padded int64 batch, as float32 numpy.
Engine = Callable[[np.ndarray, np.ndarray], np.ndarray]


class quiet:
    """Raise the named loggers to ERROR and mute warnings for a block (exporters are chatty)."""

    def __init__(self, *names: str):
        self.loggers = [logging.getLogger(n) for n in names]
        self.levels = [lg.level for lg in self.loggers]

    def __enter__(self):
        for lg in self.loggers:
            lg.setLevel(logging.ERROR)
        # Exporter internals warn about axis renaming and their own deprecations.
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)

    def __exit__(self, *exc):
        self.warnings.__exit__(*exc)
        for lg, level in zip(self.loggers, self.levels, strict=True):
            lg.setLevel(level)


# --- ONNX and int8 ONNX ----------------------------------------------------------------------


class LogitsOnly(torch.nn.Module):
    """The model as exporters want it: two tensors in, the logits tensor out."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits


def dynamic_shapes(wrapper: LogitsOnly) -> dict[str, dict[int, object]]:
    """Batch and sequence axes free for `torch.export` (sequence up to the model's limit)."""
    positions = (wrapper.inner.config.encoder or {}).get("max_position_embeddings", 512)
    batch = torch.export.Dim("batch", min=1, max=4096)
    sequence = torch.export.Dim("sequence", min=1, max=int(positions))
    return {name: {0: batch, 1: sequence} for name in ONNX_INPUTS}


def export_sample(batch: tuple[np.ndarray, np.ndarray]):
    """Two rows of at least 3 tokens: sizes 0, 1 and 2 would be specialised by torch.export."""
    input_ids, mask = batch
    input_ids, mask = input_ids[:2], mask[:2]
    if input_ids.shape[1] < 3:
        input_ids = np.pad(input_ids, ((0, 0), (0, 3 - input_ids.shape[1])))
        mask = np.pad(mask, ((0, 0), (0, 3 - mask.shape[1])))
    if len(input_ids) < 2:
        input_ids, mask = np.repeat(input_ids, 2, axis=0), np.repeat(mask, 2, axis=0)
    return torch.from_numpy(input_ids), torch.from_numpy(mask)


def write_onnx(wrapper: LogitsOnly, path: Path, batch: tuple[np.ndarray, np.ndarray]) -> None:
    """Export `wrapper` to ONNX at `path` (dynamic batch and sequence axes), traced on `batch`.

    The graph is float32 whatever precision the model was trained at: an fp32 copy on the CPU is
    traced with autocast off (onnxruntime's CPU provider has no bf16 MatMul); `wrapper` itself is
    left as it was.

    Raises:
        ExportError: onnx or onnxscript is not installed, or the graph still holds 16-bit floats.
    """
    started = time.perf_counter()
    fp32 = fp32_copy(wrapper)
    try:
        with (
            quiet("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir"),
            autocast_off(),
        ):
            torch.onnx.export(
                fp32,
                export_sample(batch),
                str(path),
                dynamo=True,
                input_names=list(ONNX_INPUTS),
                output_names=["logits"],
                dynamic_shapes=dynamic_shapes(fp32),
                opset_version=ONNX_OPSET,
                external_data=False,
                verbose=False,
            )
        check_fp32_graph(path)
    except ImportError as exc:
        raise ExportError(
            f"ONNX export needs onnx and onnxscript ({exc}); pip install 'sentune[export]'"
        ) from None
    log.info("ONNX model written in %.1f s: %s", time.perf_counter() - started, path)


def fp32_copy(wrapper: LogitsOnly) -> LogitsOnly:
    """A float32 copy of `wrapper` on the CPU, in eval mode, with each module's class `forward`.

    A model prepared by accelerate for mixed precision carries a per-instance `forward` that
    enters autocast itself (accelerate 1.x `prepare_model`), which no autocast block around the
    export can turn off, and a deep copy keeps it; dropping the instance attribute brings back
    the module's own `forward`.
    """
    copied = copy.deepcopy(wrapper).to("cpu", torch.float32).eval()
    for module in copied.modules():
        module.__dict__.pop("forward", None)
    return copied


@contextmanager
def autocast_off() -> Iterator[None]:
    """Autocast disabled on the CPU and on CUDA for the block, whatever the caller enabled
    (a trial measures its latency while its training loop's mixed precision is set up)."""
    with ExitStack() as stack:
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        yield


def check_fp32_graph(path: Path) -> None:
    """Raise unless the ONNX graph at `path` is free of 16-bit (and narrower) float tensors.

    Raises:
        ExportError: The graph holds such tensors; the message names their types.
    """
    import onnx

    model = onnx.load(str(path))
    types = set(_graph_types(model.graph))
    types.update(t for function in model.functions for n in function.node for t in _node_types(n))
    narrow = sorted(
        name.lower()
        for name in map(onnx.TensorProto.DataType.Name, types)
        if "FLOAT" in name and name != "FLOAT"
    )
    if narrow:
        raise ExportError(
            f"{path}: the ONNX graph holds {', '.join(narrow)} tensors, which onnxruntime's CPU "
            "provider cannot run; export the model in float32, outside any autocast block"
        )


def _graph_types(graph) -> Iterator[int]:
    """The element types of an ONNX graph's values, weights, constants and casts."""
    for value in (*graph.input, *graph.output, *graph.value_info):
        yield value.type.tensor_type.elem_type
    for tensor in graph.initializer:
        yield tensor.data_type
    for node in graph.node:
        yield from _node_types(node)


def _node_types(node) -> Iterator[int]:
    for attribute in node.attribute:
        if node.op_type == "Cast" and attribute.name == "to":
            yield attribute.i
        if attribute.HasField("t"):
            yield attribute.t.data_type
        subgraphs = [*attribute.graphs, *([attribute.g] if attribute.HasField("g") else [])]
        for graph in subgraphs:
            yield from _graph_types(graph)


def write_int8(source: Path, target: Path) -> None:
    """Quantize the ONNX model at `source` to int8 weights (dynamic activations) at `target`."""
    import_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic advises pre-processing on the root logger at every call; nothing to act on.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    log.info("int8 model written: %s", target)


def session_engine(path: Path, threads: int) -> Engine:
    """An `Engine` running the ONNX file at `path` on onnxruntime's CPU provider."""
    session = build_session(path, threads=threads)

    def engine(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return run_session(session, input_ids, attention_mask)

    return engine


# --- timing ----------------------------------------------------------------------------------


def timing_batches(
    ids: list[np.ndarray], pad_id: int, *, count: int, batch_size: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` padded batches of `batch_size` texts, taken in order from `ids` (cycling)."""
    if not ids:
        raise ValueError("timing needs at least one text")
    return [
        pad_batch([ids[(start + j) % len(ids)] for j in range(batch_size)], pad_id=pad_id)
        for start in range(0, batch_size * count, batch_size)
    ]


def timed(engine: Engine, batches, warmup: int) -> np.ndarray:
    """Milliseconds of each call after the first `warmup` calls."""
    times = []
    for i, (input_ids, mask) in enumerate(batches):
        started = time.perf_counter()
        engine(input_ids, mask)
        if i >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    return np.asarray(times)


class Latency(NamedTuple):
    """A model's inference cost: batch-1 latency, batch-32 throughput, size of what was run."""

    p50_ms: float
    p95_ms: float
    #: Texts per second at batch `config.LATENCY_BATCH_SIZE`.
    throughput_b32: float
    model_mb: float
    #: What was timed: `onnx`, `int8` (onnxruntime on the CPU) or `pytorch-cuda`.
    engine: str
    threads: int

    def metrics(self) -> dict[str, float]:
        """The `config.INFERENCE_METRICS` as a trial reports them."""
        return {
            config.LATENCY_P50_MS: self.p50_ms,
            config.LATENCY_P95_MS: self.p95_ms,
            config.THROUGHPUT_B32: self.throughput_b32,
            config.MODEL_MB: self.model_mb,
        }


def time_engine(
    engine: Engine,
    ids: list[np.ndarray],
    pad_id: int,
    *,
    warmup: int = config.LATENCY_WARMUP,
    runs: int = config.LATENCY_RUNS,
    batches: int = config.LATENCY_BATCHES,
) -> tuple[np.ndarray, np.ndarray]:
    """Milliseconds of `runs` batch-1 calls and of `batches` batch-32 calls, each after
    `warmup` untimed calls, on the texts `ids` (already cut to the model's max_length)."""
    singles = timing_batches(ids, pad_id, count=warmup + runs)
    groups = timing_batches(
        ids, pad_id, count=warmup + batches, batch_size=config.LATENCY_BATCH_SIZE
    )
    return timed(engine, singles, warmup), timed(engine, groups, warmup)


def summarize(single_ms: np.ndarray, batch_ms: np.ndarray) -> tuple[float, float, float]:
    """(p50 ms, p95 ms, texts/s at batch 32) of timed batch-1 and batch-32 calls."""
    throughput = config.LATENCY_BATCH_SIZE * len(batch_ms) / (float(np.sum(batch_ms)) / 1000)
    return (
        float(np.percentile(single_ms, 50)),
        float(np.percentile(single_ms, 95)),
        float(throughput),
    )


def measure_latency(
    model: torch.nn.Module,
    ids: list[np.ndarray],
    pad_id: int,
    *,
    int8: bool = False,
    device: str = "cpu",
    threads: int | None = None,
) -> Latency:
    """Time a model the way it will be served: ONNX (or int8 ONNX) on onnxruntime on a CPU,
    PyTorch on a GPU (where `int8` does not apply); a few seconds.

    Args:
        model: A `SentimentModel` (its weights do not matter, its shape does).
        ids: Token ids of real texts, cut as the trial cuts them.
        pad_id: The tokenizer's padding id.
        int8: Time the int8-quantized ONNX model (CPU only).
        device: `cpu` or `cuda`.
        threads: onnxruntime intra-op threads (None: torch's current count).

    Returns:
        The `Latency`.
    """
    threads = threads or torch.get_num_threads()
    model = model.eval()
    if device == "cuda":
        return _measure_cuda(model, ids, pad_id, threads)
    with tempfile.TemporaryDirectory(prefix="sentune-latency-") as folder:
        path = Path(folder) / "model.onnx"
        sample = timing_batches(ids, pad_id, count=1, batch_size=2)[0]
        write_onnx(LogitsOnly(model).eval(), path, sample)
        if int8:
            write_int8(path, path.with_suffix(".int8.onnx"))
            path = path.with_suffix(".int8.onnx")
        size_mb = os.path.getsize(path) / 2**20
        single_ms, batch_ms = time_engine(session_engine(path, threads), ids, pad_id)
    p50, p95, throughput = summarize(single_ms, batch_ms)
    return Latency(p50, p95, throughput, size_mb, "int8" if int8 else "onnx", threads)


def _measure_cuda(model: torch.nn.Module, ids, pad_id: int, threads: int) -> Latency:
    wrapper = LogitsOnly(model.to("cuda")).eval()

    def engine(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = wrapper(
                torch.from_numpy(input_ids).to("cuda"), torch.from_numpy(attention_mask).to("cuda")
            )
            torch.cuda.synchronize()
        return out

    single_ms, batch_ms = time_engine(engine, ids, pad_id)
    size_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    p50, p95, throughput = summarize(single_ms, batch_ms)
    return Latency(p50, p95, throughput, size_mb, "pytorch-cuda", threads)
