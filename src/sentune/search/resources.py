"""Memory and GPUs for a search: how many trials share a GPU (`gpus_per_trial: auto`) and how
many CPU trials this host's memory holds at once (`concurrency`), both from an estimate of a
trial's memory; the cards read without a CUDA context; CUDA MPS around a search. No Ray here:
`search.py` applies the result to the Tune run."""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from sentune import config
from sentune.config import BudgetConfig
from sentune.errors import ResourceError
from sentune.machine import environment
from sentune.space import MAX_LENGTH_KEY

if TYPE_CHECKING:
    from sentune.search.options import SearchOptions
    from sentune.space import SearchSpec

log = logging.getLogger("sentune.search")


#: `budget.gpus_per_trial: auto` puts at most this many trials on one GPU: more rarely helps
#: (each trial's batches already keep the SMs partly busy) and each costs a CUDA context.
MAX_TRIALS_PER_GPU = 8
#: Share of the card's memory the packed trials may plan for (the rest: fragmentation, and the
#: evaluation's larger batches).
GPU_MEMORY_USABLE = 0.9
#: Per trial, outside the model's tensors: the CUDA context, cuBLAS/cuDNN workspaces, kernels.
TRIAL_OVERHEAD_BYTES = 1 << 30


class ModelShape(NamedTuple):
    """What the memory of a trial depends on, from the encoder's config."""

    params: int
    hidden_size: int
    layers: int
    heads: int


class Packing(NamedTuple):
    """How trials share the GPUs: `per_gpu` trials of `gpus_per_trial` each, `concurrency`
    trials at once in all, from an estimate of `trial_bytes` each on a card of `card_bytes`."""

    gpus_per_trial: float
    per_gpu: int
    concurrency: int
    trial_bytes: int
    card_bytes: int


def trial_memory_bytes(
    shape: ModelShape, *, batch_size: int, max_length: int, precision: str
) -> int:
    """An estimate of one trial's peak GPU memory.

    fp32 master weights, their gradients and AdamW's two moments (16 bytes a parameter), the
    16-bit copies of the weights that autocast makes (2 bytes a parameter), the activations
    kept for the backward pass, per layer `s·b·h·(34 + 5·a·s/h)` bytes in 16-bit precision
    (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
    Models"; twice that in fp32), and `TRIAL_OVERHEAD_BYTES`.

    Args:
        shape: The encoder's size.
        batch_size: Examples per forward pass (the largest the search may use).
        max_length: Tokens per example (the largest the search may use).
        precision: `fp32`, `bf16`, `fp16`, or `auto` (16-bit: what it resolves to on CUDA).
    """
    state = 16 * shape.params + (2 * shape.params if precision != "fp32" else 0)
    s, b, h, a = max_length, batch_size, shape.hidden_size, shape.heads
    per_layer = s * b * h * (34 + 5 * a * s / h)
    activations = per_layer * shape.layers * (2 if precision == "fp32" else 1)
    return int(state + activations + TRIAL_OVERHEAD_BYTES)


def gpu_packing(
    shape: ModelShape,
    *,
    batch_size: int,
    max_length: int,
    precision: str,
    card_bytes: int,
    gpus: int = 1,
    max_per_gpu: int = MAX_TRIALS_PER_GPU,
) -> Packing:
    """How many trials share each GPU: as many as `GPU_MEMORY_USABLE` of its memory holds by
    `trial_memory_bytes`, at least 1 and at most `max_per_gpu`.

    Returns:
        The packing; `gpus_per_trial` is `1/per_gpu` rounded down to Ray's resolution (1e-4),
        so that `per_gpu` trials fit on one GPU.
    """
    trial = trial_memory_bytes(
        shape, batch_size=batch_size, max_length=max_length, precision=precision
    )
    per_gpu = max(1, min(max_per_gpu, int(GPU_MEMORY_USABLE * card_bytes // trial)))
    share = math.floor(10_000 / per_gpu) / 10_000
    return Packing(share, per_gpu, per_gpu * gpus, trial, card_bytes)


def resolve_gpus_per_trial(
    spec: SearchSpec, model_path: str, options: SearchOptions
) -> BudgetConfig:
    """The budget with `gpus_per_trial: auto` made concrete: 0 without a local CUDA GPU (or
    with `--device cpu`), else `gpu_packing` of this host's smallest GPU for the largest batch
    and max_length of the search, with `concurrency` to match unless the space sets it.
    An explicit `gpus_per_trial` is kept as it is.

    Raises:
        ResourceError: `--precision bf16` on a GPU without bf16 (said here, before any trial).
    """
    budget = spec.budget
    if budget.gpus_per_trial != config.GPUS_AUTO:
        return budget
    cards = [] if options.device == "cpu" else gpu_cards()
    if not cards:
        if options.address is not None:
            log.info(
                "budget.gpus_per_trial auto: no GPU on this host, so trials get none; pass "
                "--gpus-per-trial to use a cluster's GPUs"
            )
        return replace(budget, gpus_per_trial=0.0)
    if options.precision == "bf16" and not all(card.bf16 for card in cards):
        raise ResourceError("this GPU has no bf16; use --precision fp16")
    packing = gpu_packing(
        model_shape(model_path),
        batch_size=max(spec.values("train.batch_size")),
        max_length=max(spec.values(MAX_LENGTH_KEY)),
        # `auto` is bf16 or fp16 on CUDA: the same bytes, so which one needs no CUDA here.
        precision=options.precision,
        card_bytes=min(card.memory_bytes for card in cards),
        gpus=len(cards),
    )
    log.info(
        "budget.gpus_per_trial auto: %d trial(s) per GPU (%.1f GiB estimated per trial, "
        "%.0f GiB cards), %d at once; set --gpus-per-trial to choose",
        packing.per_gpu,
        packing.trial_bytes / 2**30,
        packing.card_bytes / 2**30,
        packing.concurrency,
    )
    cpus = options.num_cpus or os.cpu_count() or 1
    if options.address is None and packing.concurrency * cpus_each(budget, options) > cpus:
        log.warning(
            "%d packed trials at %g CPUs each need more than this host's %d CPUs, so fewer "
            "run at once; lower --cpus-per-trial (a GPU trial needs about one)",
            packing.concurrency,
            cpus_each(budget, options),
            cpus,
        )
    return replace(
        budget,
        gpus_per_trial=packing.gpus_per_trial,
        concurrency=budget.concurrency or packing.concurrency,
    )


def resolve_cpus_per_trial(budget: BudgetConfig, options: SearchOptions) -> BudgetConfig:
    """The budget with `cpus_per_trial: auto` made concrete (after `resolve_gpus_per_trial`):
    every CPU of this host (`--num-cpus`, else all) when the trials run on its CPUs, so one
    trial at a time trains on all cores; 1 for GPU trials (a GPU trial needs about one) and
    on a cluster (`--address`: Ray places the trials on what its nodes have).

    On 2 cores one trial on both gave its first evaluation 43 s after the start, two trials on
    one core each 94-110 s (docs/benchmarks.md): the evaluations that ASHA and the sampler wait
    for come about twice as early, and the first trial is a known-good start point.
    """
    if budget.cpus_per_trial != config.CPUS_AUTO:
        return budget
    if options.address is not None or config.uses_gpus(budget):
        return replace(budget, cpus_per_trial=1.0)
    return replace(budget, cpus_per_trial=float(_local_cpus(options)))


def cpus_each(budget: BudgetConfig, options: SearchOptions) -> float:
    """`budget.cpus_per_trial`, with `auto` as `resolve_cpus_per_trial` makes it."""
    return float(resolve_cpus_per_trial(budget, options).cpus_per_trial)


def _local_cpus(options: SearchOptions) -> int:
    """The CPUs local Ray has: `--num-cpus`, the CPUs of a Ray this process already started
    (a bench, the tests), else all of this host's (what `start_ray` gives Ray)."""
    if options.num_cpus:
        return options.num_cpus
    import ray

    if ray.is_initialized():
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    return os.cpu_count() or 1


#: Share of the memory available when a search starts that its CPU trials may plan for: the
#: search's own process, Ray's services and its object store take the rest.
HOST_MEMORY_USABLE = 0.8


def resolve_cpu_concurrency(
    spec: SearchSpec, model_path: str, options: SearchOptions
) -> BudgetConfig:
    """The budget with `concurrency` capped by this host's memory when trials run on its CPUs.

    As many trials run at once as `HOST_MEMORY_USABLE` of the available memory holds by
    `trial_memory_bytes` (at least 1), when that is fewer than the CPUs (or `concurrency`)
    allow. Long texts make a trial large (MiniLM at batch 32 and max_length 512 peaks at
    ~11 GiB on a CPU), and Ray kills a worker when the host runs out of memory, which ends the
    whole search: so an explicit `concurrency` is capped too (a space's value was chosen for
    short texts), with a warning that says why. GPU trials (the card's memory decides,
    `resolve_gpus_per_trial`) and a cluster's (other hosts) are left as they are.
    """
    budget = spec.budget
    if config.uses_gpus(budget) or options.address is not None:
        return budget
    wanted = concurrent_trials(budget, options)
    batch_size = max(spec.values("train.batch_size"))
    max_length = max(spec.values(MAX_LENGTH_KEY))
    trial = trial_memory_bytes(
        model_shape(model_path),
        batch_size=batch_size,
        max_length=max_length,
        # `auto` is bf16 only on CPUs that have it: plan for fp32.
        precision="bf16" if options.precision == "bf16" else "fp32",
    )
    available = host_memory_bytes()
    fits = int(HOST_MEMORY_USABLE * available // trial)
    if fits >= wanted:
        return budget
    need = (
        f"each trial needs ~{trial / 2**30:.1f} GiB (batch {batch_size}, max_length "
        f"{max_length}) and {available / 2**30:.1f} GiB of memory is available"
    )
    fix = "lower train.batch_size (train.effective_batch_size keeps the step) or train.max_length"
    if fits == 0:
        log.warning("budget.concurrency 1: %s, so even one may be killed for memory; %s", need, fix)
    else:
        log.warning(
            "budget.concurrency %d, not %d: %s; to run more, %s",
            fits,
            wanted,
            need,
            fix,
        )
    return replace(budget, concurrency=max(1, fits))


def concurrent_trials(budget: BudgetConfig, options: SearchOptions) -> int | None:
    """How many trials run at once on this host: `budget.concurrency`, at most as many as its
    CPUs hold at `cpus_per_trial` and, for GPU trials, its GPUs at `gpus_per_trial` (Ray packs
    `1 // gpus_per_trial` trials on each GPU). None on a cluster (`--address`): Ray places them
    on what the cluster has."""
    if options.address is not None:
        return None
    cpus = options.num_cpus or os.cpu_count() or 1
    slots = max(1, int(cpus // cpus_each(budget, options)))
    if config.uses_gpus(budget):
        share, gpus = float(budget.gpus_per_trial), len(gpu_cards())
        per_gpu = int(1 / share + 1e-6) if share <= 1 else 0
        slots = min(slots, max(1, gpus * per_gpu if per_gpu else gpus // math.ceil(share)))
    return min(slots, budget.concurrency or slots)


def host_memory_bytes() -> int:
    """Memory that new processes can take now, without swapping (psutil's `available`)."""
    import psutil

    return psutil.virtual_memory().available


def model_shape(model_path: str) -> ModelShape:
    """The encoder's size from its config alone (no weights are read)."""
    from sentune.train.encoders import encoder_config

    cfg = encoder_config(model_path)
    h, layers = cfg.hidden_size, cfg.num_hidden_layers
    ffn = getattr(cfg, "intermediate_size", 4 * h)
    vocab = getattr(cfg, "vocab_size", 30522) + getattr(cfg, "max_position_embeddings", 512)
    # Embeddings, and per layer the attention's four projections and the feed-forward pair.
    params = vocab * h + layers * (4 * h * h + 2 * h * ffn)
    return ModelShape(params, h, layers, cfg.num_attention_heads)


class GpuCard(NamedTuple):
    """What the packing needs to know of one GPU."""

    memory_bytes: int
    #: Compute capability 8.0 or newer (Ampere on): what `torch.cuda.is_bf16_supported` checks.
    bf16: bool


#: bf16 arithmetic needs this major compute capability or newer.
BF16_COMPUTE_CAPABILITY = 8


def gpu_cards() -> list[GpuCard]:
    """This host's GPUs; empty without a CUDA GPU.

    Asks `nvidia-smi` first, so that this (driver) process does not create a CUDA context of
    its own that would hold GPU memory for the whole search; torch when it is not there (or
    too old to report the compute capability).
    """
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=memory.total,compute_cap", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            return [_smi_card(line) for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError, ValueError):
            log.debug("nvidia-smi could not describe the GPUs; asking torch", exc_info=True)
    import torch

    if not torch.cuda.is_available():
        return []
    properties = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    return [GpuCard(p.total_memory, p.major >= BF16_COMPUTE_CAPABILITY) for p in properties]


def _smi_card(line: str) -> GpuCard:
    """One line of `nvidia-smi --query-gpu=memory.total,compute_cap` (`81559, 9.0`: MiB and
    the compute capability); ValueError for anything else."""
    memory_mib, compute_capability = (field.strip() for field in line.split(","))
    return GpuCard(
        int(float(memory_mib)) * 2**20, float(compute_capability) >= BF16_COMPUTE_CAPABILITY
    )


@contextmanager
def cuda_mps(enabled: bool):
    """CUDA MPS for the body of a `with` block (when `enabled`): starts the control daemon
    (`nvidia-cuda-mps-control -d`) with its pipe and log folders in a temporary folder, and
    quits it after. Ray must start inside the block: the trial processes find the daemon
    through `CUDA_MPS_PIPE_DIRECTORY`, which CUDA reads from their environment (inherited
    from this process), so the variables are set here for the block only.
    """
    if not enabled:
        yield
        return
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        raise ResourceError(
            "--mps needs nvidia-cuda-mps-control (part of the NVIDIA driver) on PATH; install "
            "it or drop --mps"
        )
    folder = Path(tempfile.mkdtemp(prefix="sentune-mps-"))
    env = {
        "CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"),
        "CUDA_MPS_LOG_DIRECTORY": str(folder / "log"),
    }
    try:
        with environment(env):
            subprocess.run([control, "-d"], check=True, timeout=30)
            log.info("CUDA MPS daemon started (pipe %s)", env["CUDA_MPS_PIPE_DIRECTORY"])
            try:
                yield
            finally:
                subprocess.run([control], input="quit\n", text=True, timeout=30, check=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
