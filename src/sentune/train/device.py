"""Where and how a trial computes: the device and the precision it runs at (`auto` resolved, an
explicit choice checked), accelerate's per-process state dropped between trials, `torch.compile`
with static shapes, and the host waiting for the device where a time must be true.
"""

from __future__ import annotations

import torch

from sentune import config
from sentune.errors import ResourceError, SentuneError
from sentune.machine import cpu_has_bf16


def resolve_device(device: str) -> str:
    """Turn `auto` into `cuda` when torch sees a GPU, else `cpu`; check an explicit choice."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ResourceError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    if device not in ("cpu", "cuda"):
        raise SentuneError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """Turn `auto` into fp16/bf16 on CUDA (bf16 where supported), bf16 on CPUs with native
    bf16 instructions, fp32 elsewhere; check that an explicit choice is possible."""
    if precision not in config.PRECISIONS:
        raise SentuneError(f"unknown precision {precision!r}; use one of {config.PRECISIONS}")
    if device == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if precision == "auto":
            return "bf16" if bf16 else "fp16"
        if precision == "bf16" and not bf16:
            raise ResourceError("this GPU has no bf16; use --precision fp16")
        return precision
    if precision == "fp16":
        raise ResourceError("fp16 needs a CUDA GPU; on CPU use --precision bf16 or fp32")
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    if precision == "bf16" and not cpu_has_bf16():
        raise ResourceError("this CPU has no native bf16 (avx512_bf16/amx); use --precision fp32")
    return precision


def mixed_precision(precision: str) -> str:
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]


def reset_accelerate() -> None:
    """Forget the previous trial's accelerate state (precision, device, accumulation).

    accelerate keeps its state per process; a process that runs several trials (a benchmark, a
    test, a reused Ray actor) must drop it before building a new `Accelerator`. accelerate has
    no public call for this: `_reset_state` is private (accelerate 1.x), used here only.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


#: Compiled graphs kept per function: one per shape and mode, i.e. per length bucket
#: (`batching.LENGTH_BUCKET`) for training and for evaluation (batches are padded to full rows,
#: so the batch size does not vary); at max_length 512 that is 32, over torch's default of 8,
#: past which it would fall back to eager.
COMPILE_RECOMPILE_LIMIT = 64


def compile_mode(mode: str, device: str) -> str:
    """`torch.compile`'s mode for `train.compile_mode` on `device` (`config.COMPILE_MODES`)."""
    if mode not in config.COMPILE_MODES:
        raise SentuneError(
            f"unknown train.compile_mode {mode!r}; use one of {', '.join(config.COMPILE_MODES)}"
        )
    if mode == "auto":
        return "reduce-overhead" if device == "cuda" else "default"
    return mode


def compile_model(model: torch.nn.Module, mode: str = "default") -> torch.nn.Module:
    """`torch.compile(model, mode=mode)` with static shapes: batches come padded to a few
    lengths (`batching.pad_batch_static`), so a graph per shape runs faster than one dynamic
    graph, and each shape can be replayed as a CUDA graph (`reduce-overhead`).

    The compiled module shares the model's parameters; save and unwrap the model itself.
    """
    import torch._dynamo

    # The previous trial's graphs (a reused worker) guard on a model that is gone; dropping
    # them keeps this trial's recompiles under the limit. Inductor's on-disk cache still
    # serves the kernels of shapes compiled before.
    torch._dynamo.reset()
    # A private config of torch (2.x), set here only; `cache_size_limit` is its older name.
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, COMPILE_RECOMPILE_LIMIT)
    return torch.compile(model, dynamic=False, mode=mode)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
