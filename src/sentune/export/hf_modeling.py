"""A sentune sentiment classifier for transformers, with torch and transformers only.

`sentune export` copies this file, as it is, into the export folder as `modeling_sentune.py`, and
the folder's `config.json` maps `AutoConfig` and `AutoModelForSequenceClassification` to the two
classes below (`auto_map`), so that without sentune installed

    pipeline("text-classification", model=EXPORT_DIR, trust_remote_code=True, truncation=True)

loads the model: the encoder is built from the config stored in `config.json` (nothing is
downloaded) and its weights, with the head's, come from `model.safetensors`.

It mirrors `sentune.train.model.SentimentModel` (pooling, head, temperature) and must compute the
same logits; sentune's tests (`tests/test_hf_standalone.py`) and every export check that it does.
It imports nothing of sentune and registers nothing: sentune itself never imports it.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

try:  # transformers 5: initialisers that leave weights already loaded as they are
    from transformers import initialization as init
except ImportError:  # transformers 4
    from torch.nn import init

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}


class SentimentConfig(PretrainedConfig):
    """Configuration of a `SentimentModel`, as sentune writes it in `config.json`.

    Args:
        encoder: The encoder's own `config.to_dict()` (with its `model_type`).
        pooling: `cls` (first token), `pooler` (the encoder's pooler output) or `mean` (mean of
            the unpadded tokens).
        head_layers: Hidden layers of the head (0: one linear layer after dropout).
        head_width: Width of each hidden layer; None: the encoder's hidden size.
        activation: `gelu`, `relu` or `tanh`.
        dropout: Dropout before every linear layer of the head.
        class_weights: The training loss's weight per class, or None.
        temperature: The returned logits are divided by it (probability calibration; the loss is
            computed on the undivided logits).
        **kwargs: The usual config fields (`id2label`, `label2id`, ...).
    """

    model_type = "sentune-sentiment"
    # A declared field: transformers 5 refuses to save an undeclared `temperature` (a generation
    # setting) in a model's config.
    temperature: float = 1.0

    def __init__(
        self,
        encoder: dict[str, Any] | None = None,
        pooling: str = "cls",
        head_layers: int = 0,
        head_width: int | None = None,
        activation: str = "gelu",
        dropout: float = 0.1,
        class_weights: list[float] | None = None,
        temperature: float = 1.0,
        **kwargs: Any,
    ):
        self.encoder = encoder
        self.pooling = pooling
        self.head_layers = head_layers
        self.head_width = head_width
        self.activation = activation
        self.dropout = dropout
        self.class_weights = list(class_weights) if class_weights is not None else None
        super().__init__(**kwargs)
        # After the base class, which sets a generation default of its own in transformers 4.
        self.temperature = float(temperature)


class SentimentModel(PreTrainedModel):
    """A BERT-family encoder, a pooled sentence vector and an MLP classification head."""

    config_class = SentimentConfig
    main_input_name = "input_ids"
    accepts_loss_kwargs = False

    def __init__(self, config: SentimentConfig):
        super().__init__(config)
        if not config.encoder or "model_type" not in config.encoder:
            raise ValueError("config.json: `encoder` must hold the encoder's config with its type")
        encoder_type = config.encoder["model_type"]
        if encoder_type not in CONFIG_MAPPING:
            raise ValueError(
                f"config.json: encoder model_type {encoder_type!r} is not known to this "
                "transformers; upgrade it"
            )
        self.encoder = AutoModel.from_config(CONFIG_MAPPING[encoder_type].from_dict(config.encoder))
        # DistilBERT's forward takes no token_type_ids.
        self._takes_token_type_ids = (
            "token_type_ids" in inspect.signature(self.encoder.forward).parameters
        )
        self.head = _build_head(config, hidden_size=self.encoder.config.hidden_size)
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
        """Logits (batch, num_labels), divided by `config.temperature`; with `labels`, the
        (class-weighted) cross-entropy of the undivided logits as `loss`."""
        encoder_inputs = dict(kwargs, input_ids=input_ids, attention_mask=attention_mask)
        if token_type_ids is not None and self._takes_token_type_ids:
            encoder_inputs["token_type_ids"] = token_type_ids
        outputs = self.encoder(**encoder_inputs, return_dict=True)
        logits = self.head(self._pool(outputs, attention_mask))
        loss = None
        if labels is not None:
            weight = self.config.class_weights
            if weight is not None:
                weight = torch.tensor(weight, device=logits.device)
            loss = nn.functional.cross_entropy(logits.float(), labels.view(-1), weight=weight)
        return SequenceClassifierOutput(loss=loss, logits=logits / self.config.temperature)

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


def _build_head(config: SentimentConfig, *, hidden_size: int) -> nn.Sequential:
    width = config.head_width or hidden_size
    layers: list[nn.Module] = [nn.Dropout(config.dropout)]
    in_features = hidden_size
    for _ in range(config.head_layers):
        layers += [
            nn.Linear(in_features, width),
            _ACTIVATIONS[config.activation](),
            nn.Dropout(config.dropout),
        ]
        in_features = width
    layers.append(nn.Linear(in_features, config.num_labels))
    return nn.Sequential(*layers)
