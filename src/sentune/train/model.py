"""The sentiment model: any BERT-family encoder under a configurable classification head.

`SentimentModel` is a `PreTrainedModel` with its own `SentimentConfig` (the encoder's config as a
dict, plus pooling, head depth/width/activation/dropout, class weights and temperature), so
`save_pretrained` writes one safetensors file and a `config.json`, and `from_pretrained` (or
`AutoModelForSequenceClassification` once this module is imported) restores it exactly.

`export/hf_modeling.py` is this model's forward again, for exports loaded without sentune: a
change to the pooling, the head or the forward here goes there too (`tests/test_hf_standalone.py`
compares the two).
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput

from sentune.config import ACTIVATIONS, IMBALANCE, POOLINGS, HeadConfig, outside_limits
from sentune.errors import ModelError
from sentune.train.encoders import (
    SentimentConfig,
    check_encoder_layers,
    config_from_dict,
    load_failed,
    resolve_model,
)

log = logging.getLogger(__name__)

_ACTIVATION_MODULES = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}


class SentimentModel(PreTrainedModel):
    """A BERT-family encoder, a pooled sentence vector and an MLP classification head.

    Args:
        config: The model's `SentimentConfig`.
        encoder: An already loaded encoder to use (kept as it is, not re-initialised); None builds
            a randomly initialised one from `config.encoder`.
    """

    config_class = SentimentConfig
    main_input_name = "input_ids"
    # The loss is a mean over the batch; the HF Trainer must not pass `num_items_in_batch`.
    accepts_loss_kwargs = False

    def __init__(self, config: SentimentConfig, encoder: PreTrainedModel | None = None):
        super().__init__(config)
        _check_head(config)
        if encoder is None:
            encoder = AutoModel.from_config(config_from_dict(config.encoder))
        else:
            # post_init skips modules and tensors flagged as initialised; without the flags it
            # would overwrite the pretrained weights with random ones.
            for module in encoder.modules():
                module._is_hf_initialized = True
            for tensor in [*encoder.parameters(), *encoder.buffers()]:
                tensor._is_hf_initialized = True
        self.encoder = encoder
        if config.pooling == "pooler" and getattr(encoder, "pooler", None) is None:
            raise ModelError(
                f"pooling 'pooler': encoder {type(encoder).__name__} has no pooler layer; "
                "use pooling 'cls' or 'mean'"
            )
        # DistilBERT's forward takes no token_type_ids.
        self._takes_token_type_ids = (
            "token_type_ids" in inspect.signature(encoder.forward).parameters
        )
        # Encoders whose masks come from transformers' `create_bidirectional_mask` (it passes a
        # 4D mask through as it is; see `_encoder_mask`).
        self._takes_4d_mask = hasattr(
            sys.modules.get(type(encoder).__module__), "create_bidirectional_mask"
        )
        self.head = _build_head(config, hidden_size=encoder.config.hidden_size)
        # The class weights on each device the loss ran on: made once, not copied to a GPU (a
        # blocking copy) at every step. Not a buffer, so checkpoints stay as they were.
        self._class_weight_by_device: dict[torch.device, torch.Tensor] = {}
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # The encoder is a PreTrainedModel of its own and initialises itself; only the head is ours.
        if isinstance(module, nn.Linear):
            std = (self.config.encoder or {}).get("initializer_range", 0.02)
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        """Classify a batch.

        Args:
            input_ids: Token ids, shape (batch, length).
            attention_mask: 1 for real tokens, 0 for padding (None: no padding).
            token_type_ids: Segment ids; dropped for encoders that do not take them.
            labels: Class indices, shape (batch,); when given, the loss is computed.
            **kwargs: Further encoder inputs (e.g. `inputs_embeds`).

        Returns:
            `SequenceClassifierOutput` with `logits` (batch, num_labels), divided by
            `config.temperature`, and `loss` (None without labels): cross-entropy of the
            undivided logits, weighted by `config.class_weights` if set.
        """
        encoder_inputs = dict(
            kwargs, input_ids=input_ids, attention_mask=self._encoder_mask(attention_mask)
        )
        if token_type_ids is not None and self._takes_token_type_ids:
            encoder_inputs["token_type_ids"] = token_type_ids
        outputs = self.encoder(**encoder_inputs, return_dict=True)
        logits = self.head(self._pool(outputs, attention_mask))
        loss = None
        if labels is not None:
            weight = self._class_weight(logits.device)
            # In fp32 whatever the compute dtype: bf16 would round both the weights and the loss.
            loss = nn.functional.cross_entropy(logits.float(), labels.view(-1), weight=weight)
        # The temperature calibrates the probabilities of a trained model; training (at 1.0)
        # learns from the logits as they are. Every format (HF, ONNX, torch.export) divides alike.
        return SequenceClassifierOutput(loss=loss, logits=logits / self.config.temperature)

    def _encoder_mask(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The padding mask as the encoder gets it.

        Given a 2D mask, transformers' SDPA attention reads `mask.all()` on the host before
        every forward pass (to skip masking when nothing is padded): on a GPU the host then
        waits for the previous step to finish before it can queue the next. A 4D boolean mask
        (batch, 1, 1, length: True where a token may be attended to) means the same and is
        used as it is, so the host runs ahead. Only for encoders that build their masks with
        transformers' `create_bidirectional_mask` and attend with SDPA, and never while
        tracing for export (the ONNX graph keeps its 2D input).
        """
        if (
            attention_mask is None
            or attention_mask.dim() != 2
            or not self._takes_4d_mask
            or getattr(self.encoder.config, "_attn_implementation", None) != "sdpa"
            or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_exporting()
        ):
            return attention_mask
        return attention_mask[:, None, None, :].bool()

    def _class_weight(self, device: torch.device) -> torch.Tensor | None:
        if self.config.class_weights is None:
            return None
        if device not in self._class_weight_by_device:
            self._class_weight_by_device[device] = torch.tensor(
                self.config.class_weights, device=device
            )
        return self._class_weight_by_device[device]

    def _pool(self, outputs: Any, attention_mask: torch.Tensor | None) -> torch.Tensor:
        hidden = outputs.last_hidden_state
        if self.config.pooling == "pooler":
            return outputs.pooler_output
        if self.config.pooling == "mean":
            if attention_mask is None:
                return hidden.mean(dim=1)
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return hidden[:, 0]


def _check_head(config: SentimentConfig) -> None:
    if config.encoder is None:
        raise ModelError("SentimentConfig.encoder is missing: build the model with build_model()")
    if config.pooling not in POOLINGS:
        raise ModelError(f"head.pooling: {config.pooling!r} is not one of {', '.join(POOLINGS)}")
    if config.activation not in ACTIVATIONS:
        raise ModelError(
            f"head.activation: {config.activation!r} is not one of {', '.join(ACTIVATIONS)}"
        )
    for key, value in (
        ("head.layers", config.head_layers),
        ("head.width", config.head_width),
        ("head.dropout", config.dropout),
    ):
        problem = None if value is None else outside_limits(key, value)
        if problem:
            raise ModelError(f"{key}: {problem}")
    if not (math.isfinite(config.temperature) and config.temperature > 0):
        raise ModelError(f"temperature: must be a positive number, got {config.temperature!r}")
    weights = config.class_weights
    if weights is not None and len(weights) != config.num_labels:
        raise ModelError(
            f"class_weights: {len(weights)} weights for {config.num_labels} labels: {weights}"
        )


def _build_head(config: SentimentConfig, *, hidden_size: int) -> nn.Sequential:
    width = config.head_width or hidden_size
    layers: list[nn.Module] = [nn.Dropout(config.dropout)]
    in_features = hidden_size
    for _ in range(config.head_layers):
        layers += [
            nn.Linear(in_features, width),
            _ACTIVATION_MODULES[config.activation](),
            nn.Dropout(config.dropout),
        ]
        in_features = width
    layers.append(nn.Linear(in_features, config.num_labels))
    return nn.Sequential(*layers)


def build_model(
    name_or_path: str,
    head: HeadConfig,
    *,
    label_names: list[str],
    class_weights: list[float] | None = None,
    pretrained: bool = True,
    encoder_layers: int | None = None,
) -> SentimentModel:
    """Put a freshly initialised head on an encoder.

    Args:
        name_or_path: A registered model name, a local encoder folder or a hub id.
        head: Pooling and head shape.
        label_names: Class names, in label-index order (they become `id2label`).
        class_weights: Cross-entropy weight per class (see `class_weights()`), or None.
        pretrained: Load the encoder's pretrained weights; False builds a random encoder from its
            config (for tests and smoke runs).
        encoder_layers: Keep only the first k layers of the encoder (None: all); the saved
            config says k, so the model loads back with k layers.

    Returns:
        The model in training mode. Head weights are drawn from N(0, initializer_range) of the
        encoder, so the same torch seed gives the same head.

    Raises:
        ModelError: The encoder cannot be loaded, the head does not fit it, or it has fewer
            layers than `encoder_layers`.
    """
    source = resolve_model(name_or_path)
    check_encoder_layers(name_or_path, encoder_layers)
    log.info(
        "encoder %s from %s (%s weights)",
        name_or_path,
        source,
        "pretrained" if pretrained else "random",
    )
    try:
        encoder_config = AutoConfig.from_pretrained(source)
        if encoder_layers is not None:
            # The checkpoint's layers past k are left unloaded: the first k keep their weights.
            encoder_config.num_hidden_layers = encoder_layers
        if pretrained:
            encoder = _pretrained_encoder(
                source, encoder_config, truncated=encoder_layers is not None
            )
            encoder_config = encoder.config
        else:
            encoder = None
    except (OSError, ValueError) as err:
        raise load_failed(name_or_path, err) from err
    config = SentimentConfig(
        encoder=encoder_config.to_dict(),
        pooling=head.pooling,
        head_layers=head.layers,
        head_width=head.width,
        activation=head.activation,
        dropout=head.dropout,
        class_weights=class_weights,
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )
    model = SentimentModel(config, encoder=encoder)
    model.train()
    return model


class _quiet_unused_weights:
    """Silence transformers' report of checkpoint weights left unused (the dropped layers)."""

    def __init__(self, active: bool):
        self.active = active
        self.level = None

    def __enter__(self):
        if self.active:
            from transformers.utils import logging as hf_logging

            self.level = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()

    def __exit__(self, *exc):
        if self.level is not None:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity(self.level)


#: The pretrained encoder last read by this process, by its folder: a process that builds
#: several models (`make gpu-check`, a benchmark) reads the weights once and copies them in
#: memory after that.
_ENCODER_CACHE: dict[tuple[str, int, int], PreTrainedModel] = {}


def _pretrained_encoder(source: str, encoder_config, *, truncated: bool) -> PreTrainedModel:
    """A fresh copy of the pretrained encoder at `source` (fp32) with `encoder_config`'s layers
    (`truncated`: the first k of the checkpoint's), read from disk once (again when a local
    folder's files change or the layers kept differ)."""
    folder = Path(source)
    stamp = (
        max((f.stat().st_mtime_ns for f in folder.iterdir()), default=0) if folder.is_dir() else 0
    )
    key = (source, stamp, encoder_config.num_hidden_layers)
    if key not in _ENCODER_CACHE:
        _ENCODER_CACHE.clear()  # one encoder at a time: a process trains one model
        # transformers 5 defaults to the checkpoint's dtype; training keeps fp32 master weights.
        with _quiet_unused_weights(truncated):
            _ENCODER_CACHE[key] = AutoModel.from_pretrained(
                source, config=encoder_config, dtype=torch.float32
            )
    return copy.deepcopy(_ENCODER_CACHE[key])


def class_weights(counts: Sequence[int], scheme: str) -> list[float] | None:
    """Per-class loss weights for an imbalanced training set.

    `balanced` gives class c the weight n / (k * count_c) (n examples, k classes), which averages
    1 over examples; `sqrt` takes the square root of the balanced weights and rescales them so
    they average 1 over classes. `none` and `oversample` (imbalance handled by the sampler)
    return None: an unweighted loss.

    Args:
        counts: Training examples per class, in label-index order.
        scheme: One of `IMBALANCE`.

    Raises:
        ModelError: Unknown scheme, or a class without examples under a weighting scheme.
    """
    if scheme not in IMBALANCE:
        raise ModelError(f"train.imbalance: {scheme!r} is not one of {', '.join(IMBALANCE)}")
    if scheme in ("none", "oversample"):
        return None
    if not counts or min(counts) <= 0:
        raise ModelError(
            f"train.imbalance {scheme!r}: every class needs training examples, got counts "
            f"{list(counts)}"
        )
    total, k = sum(counts), len(counts)
    balanced = [total / (k * count) for count in counts]
    if scheme == "balanced":
        return balanced
    roots = [math.sqrt(w) for w in balanced]
    mean = sum(roots) / k
    return [r / mean for r in roots]


def load_model(path: str | Path) -> SentimentModel:
    """Load a `SentimentModel` saved with `save_pretrained` (e.g. a trial checkpoint).

    Raises:
        ModelError: The folder is missing or is not a sentune model folder.
    """
    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{path}: is not a model folder (no config.json in it)")
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ModelError(f"{path}: unreadable config.json ({err})") from err
    if not isinstance(config, SentimentConfig):
        raise ModelError(
            f"{path}: is not a sentune model folder (model_type {config.model_type!r}, expected "
            f"{SentimentConfig.model_type!r}); train one with `sentune search`"
        )
    try:
        return SentimentModel.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ModelError(f"{path}: cannot load the model ({err})") from err


AutoModelForSequenceClassification.register(SentimentConfig, SentimentModel, exist_ok=True)
