"""What a search settles before Ray starts and before its run folder exists, so that bad input
costs neither: the resources it asks of this host (`check_resources`), the model against the
space (`check_model`), and `train.max_length: auto` or quantiles
made concrete from the training texts (`max_length_for_data`). No Ray, no torch.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from sentune import config
from sentune.errors import ResourceError, SpaceError
from sentune.search.resources import gpu_cards
from sentune.space import MAX_LENGTH_KEY, MaxLength, SearchSpec, resolve_max_length

if TYPE_CHECKING:
    from sentune.data import PreparedData
    from sentune.search.options import SearchOptions

log = logging.getLogger(__name__)

ENCODER_LAYERS_KEY = "model.encoder_layers"


def check_resources(spec: SearchSpec, options: SearchOptions) -> None:
    """What the search asks of this host (GPUs, CPUs per trial, `--mps`) against what it has;
    a cluster (`--address`) is Ray's to schedule."""
    if options.mps and options.address is not None:
        raise ResourceError(
            "--mps starts CUDA MPS on this host only; on a cluster start it on each node "
            "(nvidia-cuda-mps-control -d) and drop --mps"
        )
    # nvidia-smi, not torch: this process then neither waits for torch nor initialises CUDA.
    if config.uses_gpus(spec.budget) and options.address is None and not gpu_cards():
        raise ResourceError(
            f"budget.gpus_per_trial is {spec.budget.gpus_per_trial:g} but this host has no "
            "CUDA GPU; use --gpus-per-trial 0, or --address to run on a cluster with GPUs"
        )
    cpus = options.num_cpus or os.cpu_count() or 1
    asked = spec.budget.cpus_per_trial  # `auto` takes what the host has
    if options.address is None and asked != config.CPUS_AUTO and asked > cpus:
        raise ResourceError(
            f"budget.cpus_per_trial is {spec.budget.cpus_per_trial:g} but this host has {cpus} "
            f"CPUs; use --cpus-per-trial {cpus} or less"
        )


def check_model(spec: SearchSpec, model_path: str) -> None:
    """The space's fixed and searched `train.max_length` within the model's limit (`auto` and
    quantiles are capped there later), and `model.encoder_layers` within its layers."""
    from sentune.train.encoders import check_encoder_layers, encoder_max_length

    param = spec.params.get(MAX_LENGTH_KEY)
    resolved_later = spec.fixed.get(MAX_LENGTH_KEY) == config.MAX_LENGTH_AUTO or (
        param is not None and param.kind == "quantiles"
    )
    if not resolved_later:
        limit = encoder_max_length(model_path)
        longest = max(spec.values(MAX_LENGTH_KEY))
        if longest > limit:
            raise SpaceError(
                f"{spec.path}: train.max_length {longest} exceeds the model's limit of {limit} "
                f"tokens; use at most {limit}"
            )
    layers = [v for v in spec.values(ENCODER_LAYERS_KEY) if v is not None]
    if layers:
        check_encoder_layers(model_path, max(layers), where=f"{spec.path}: ")
        check_encoder_layers(model_path, min(layers), where=f"{spec.path}: ")


def max_length_for_data(
    spec: SearchSpec, data: PreparedData, model_path: str
) -> tuple[SearchSpec, MaxLength]:
    """Resolve `train.max_length: auto` or `{quantiles: […]}` against the training split, say
    what the values truncate, and warn when even the longest cuts more than
    `config.TRUNCATION_WARN_SHARE` of the training texts.

    Returns:
        The spec with concrete max_length values, and how they were chosen.

    Raises:
        SpaceError: A start point of the space takes a `train.max_length` the data did not give.
    """
    from sentune.train.encoders import encoder_max_length

    limit = encoder_max_length(model_path)
    spec, chosen = resolve_max_length(spec, data.train.lengths, limit=limit)
    points = data.stats.get("train_token_lengths", {})
    spread = ", ".join(f"{k} {points[k]}" for k in ("p50", "p95", "max") if k in points)
    # Two lines: one fits a 120-column terminal with the log's prefix.
    log.info(
        "train.max_length %s (%s; the model takes %d)",
        ", ".join(map(str, chosen.values)),
        chosen.rule,
        limit,
    )
    log.info(
        "it truncates %s of the %d training texts (%s tokens)",
        ", ".join(f"{chosen.truncated_share[v]:.1%}" for v in chosen.values),
        len(data.train),
        spread,
    )
    longest = max(chosen.values)
    share = chosen.truncated_share[longest]
    if share > config.TRUNCATION_WARN_SHARE:
        fix = (
            f"set {MAX_LENGTH_KEY}: auto or a longer value"
            if longest < limit
            else "the model takes no more"
        )
        log.warning(
            "train.max_length %d truncates %.1f%% of the training texts (more than %.0f%%): "
            "%s, or keep both ends of each text with train.truncation: head_tail",
            longest,
            100 * share,
            100 * config.TRUNCATION_WARN_SHARE,
            fix,
        )
    try:  # a start point of max_length quantiles meets its values only now
        spec.start_points()
    except ValueError as problem:
        raise SpaceError(f"{spec.path}: {problem}") from None
    return spec, chosen
