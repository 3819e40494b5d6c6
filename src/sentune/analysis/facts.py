"""Facts of the run beside its scores: the floor verdict, token lengths, the winner's confusion,
each trial's max_length and truncation, and the data and manifest as the run recorded them.

The floor and the winner's confusion are computed by `evaluate.py` (imported lazily, so reading
a run needs no model code); this module decides what they mean for the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from sentune import config
from sentune.analysis.params import search_params, value_label
from sentune.runs import Manifest, Run
from sentune.space import MAX_LENGTH_KEY

if TYPE_CHECKING:
    from sentune.analysis.confirm import Confirmation
    from sentune.data import PreparedData
    from sentune.space import Param
    from sentune.train.evaluate import Confusion, Floor

#: Why the TF-IDF floor may beat the best trial, in the order `FloorVerdict.causes` names them.
FLOOR_CAUSES = ("truncation", "too few epochs", "too little data")
#: Fewer training examples than this is named as a likely cause when the floor wins: TF-IDF
#: needs far fewer examples than fine-tuning an encoder does.
SMALL_TRAIN_SIZE = 2000


class FloorVerdict(NamedTuple):
    """The TF-IDF floor matches or beats the best trial; what the likely causes are."""

    trial_id: str
    #: Validation macro-F1 of the best trial and of the floor.
    best: float
    floor: float
    #: The best trial's max_length and the share of training texts it truncates (nan: unknown).
    max_length: int
    truncated_share: float
    #: The most tokens the model takes (None: not recorded by the search).
    model_limit: int | None
    #: Its last evaluation was its best: it was still improving when it stopped.
    still_improving: bool
    epochs: float
    max_epochs: int
    train_size: int
    #: The likely causes among `FLOOR_CAUSES`, in that order; empty when none stands out.
    causes: tuple[str, ...]


def floor_verdict(
    run: Run, table: pd.DataFrame, floor: Floor | None, tokens: TokenLengths | None = None
) -> FloorVerdict | None:
    """When the best trial does not beat the floor, say why it likely lost.

    Causes: `truncation` (its max_length truncates more than `config.TRUNCATION_WARN_SHARE` of
    the training texts), `too few epochs` (its last evaluation was its best) and `too little
    data` (fewer than `SMALL_TRAIN_SIZE` training examples).

    Args:
        run: The run (the best trial's parameters, the budget, the recorded max_length shares).
        table: Its leaderboard, best first.
        floor: The reference floor (None: no verdict).
        tokens: Training token lengths; without them the shares the search recorded are used.

    Returns:
        None when there is no floor or no scored trial, or the best trial beats the floor or
        scores 1.0.
    """
    scored = table.dropna(subset=[config.VAL_MACRO_F1])
    if floor is None or not len(scored):
        return None
    best = scored.iloc[0]
    # A perfect score ties with a perfect floor and has nothing to fix (easy data).
    if best[config.VAL_MACRO_F1] > floor.val_macro_f1 or best[config.VAL_MACRO_F1] >= 1.0:
        return None
    max_length = trial_max_length(run, str(best["trial_id"]))
    if tokens is not None and len(tokens.lengths):
        share = float((tokens.lengths > max_length).mean())
    else:
        recorded = (run.manifest.max_length or {}).get("truncated_share", {})
        share = float(recorded.get(str(max_length), float("nan")))
    still_improving = bool(best["best_epoch"] >= best["epochs"])
    found = {
        "truncation": share > config.TRUNCATION_WARN_SHARE,
        "too few epochs": still_improving,
        "too little data": floor.train_size < SMALL_TRAIN_SIZE,
    }
    return FloorVerdict(
        trial_id=str(best["trial_id"]),
        best=float(best[config.VAL_MACRO_F1]),
        floor=floor.val_macro_f1,
        max_length=max_length,
        truncated_share=share,
        model_limit=(run.manifest.max_length or {}).get("limit"),
        still_improving=still_improving,
        epochs=float(best["epochs"]),
        max_epochs=int(run.manifest.budget.max_epochs),
        train_size=floor.train_size,
        causes=tuple(cause for cause in FLOOR_CAUSES if found[cause]),
    )


class TokenLengths(NamedTuple):
    """Token counts of the training texts and what each candidate max_length cuts."""

    #: Tokens per training text, special tokens included.
    lengths: np.ndarray
    #: `max_length`, `truncated_share` (of training texts), `searched` (vs fixed/default).
    cuts: pd.DataFrame


def token_lengths(data: PreparedData, manifest: Manifest) -> TokenLengths:
    """Train-split token lengths and the share of texts each max_length of the run truncates."""
    from sentune.errors import SentuneError

    key = MAX_LENGTH_KEY
    lengths = np.asarray(data.train.lengths)
    searched = key in manifest.space.searched
    if searched:
        try:
            param = search_params(manifest)[key]
            values = list(param.args) if param.kind == "choice" else list(param.args[:2])
        except (SentuneError, KeyError):
            values = []
    else:
        values = [_max_length_in(manifest.space.fixed)]
    cuts = pd.DataFrame(
        {
            "max_length": [int(v) for v in sorted(set(values))],
            "truncated_share": [
                float((lengths > int(v)).mean()) if len(lengths) else float("nan")
                for v in sorted(set(values))
            ],
            "searched": searched,
        }
    )
    return TokenLengths(lengths, cuts)


def winner_confusion(
    table: pd.DataFrame, data: PreparedData, run: Run, confirmed: Confirmation | None = None
) -> Confusion | None:
    """The winner scored on the validation split: the best seed of the confirmation's winner,
    else the best trial with a kept checkpoint (None: no checkpoint yet)."""
    from sentune.train.evaluate import checkpoint_confusion

    best_seed = confirmed.winner_seed() if confirmed is not None else None
    kept = table[table["checkpoint"].fillna("").astype(str) != ""]
    if best_seed is not None and best_seed["checkpoint"]:
        winner = best_seed
    elif len(kept):
        winner = kept.iloc[0]
    else:
        return None
    return checkpoint_confusion(
        winner["checkpoint"],
        data,
        trial_id=str(winner["trial_id"]),
        max_length=trial_max_length(run, str(winner["trial_id"])),
        truncation=trial_truncation(run, str(winner["trial_id"])),
    )


def trial_max_length(run: Run, trial_id: str) -> int:
    """The max_length a trial trained with (its parameter, else the default)."""
    return _max_length_in(run.params.get(trial_id, {}))


def _max_length_in(settings: dict[str, Any]) -> int:
    """`train.max_length` in a trial's configuration or a run's fixed settings (dotted keys),
    else the default: the one place the analysis reads a max_length, so the verdict, the
    winner's confusion and the token lengths cannot disagree on it."""
    return int(settings.get(MAX_LENGTH_KEY) or config.TrainConfig.max_length)


def trial_truncation(run: Run, trial_id: str) -> str:
    """How a trial cut long texts (its parameter, else the default)."""
    return run.params.get(trial_id, {}).get("train.truncation") or config.TrainConfig.truncation


class DataSummary(NamedTuple):
    """The run's data as the manifest recorded it."""

    #: `split`, `examples` (used), `available` (before subsampling), then per label
    #: "count (share)".
    splits: pd.DataFrame
    #: `reason`, `rows`: what cleaning dropped.
    dropped: pd.DataFrame
    #: `item`, `value`: dataset, source, rows read and dropped, training rows used, fingerprint.
    facts: pd.DataFrame
    #: Share of each label (columns) in each split (index).
    class_shares: pd.DataFrame
    #: Training examples the trials trained on.
    train_used: int | None
    #: Training examples there were before `data.train_size` subsampled (None: unknown).
    train_available: int | None


def data_summary(manifest: Manifest) -> DataSummary:
    """The run's data as the manifest recorded it: split sizes before and after subsampling
    with class balance, and what cleaning dropped (by reason)."""
    stats = manifest.data.stats
    sizes = stats.get("split_sizes", {})
    available = _available_sizes(manifest)
    counts = stats.get("class_counts", {})
    rows = []
    for split, size in sizes.items():
        row = {"split": split, "examples": size, "available": available.get(split)}
        for label, count in counts.get(split, {}).items():
            row[label] = f"{count} ({count / size:.0%})" if size else str(count)
        rows.append(row)
    dropped = pd.DataFrame(
        [{"reason": k, "rows": v} for k, v in stats.get("dropped", {}).items()],
        columns=["reason", "rows"],
    )
    shares = pd.DataFrame(
        {
            split: {k: v / (sum(c.values()) or 1) for k, v in c.items()}
            for split, c in counts.items()
        }
    ).T
    used, total = sizes.get("train"), available.get("train")
    source = stats.get("source", {})
    facts = pd.DataFrame(
        [
            ("dataset", manifest.data.config.dataset),
            ("source", source.get("path") or source.get("hub_id") or source.get("name")),
            ("rows read", stats.get("rows_read")),
            ("rows dropped", int(dropped["rows"].sum()) if len(dropped) else 0),
            ("training rows used", _used_of(used, total)),
            ("fingerprint", manifest.data.fingerprint),
            ("train token lengths", _flat_text(stats.get("train_token_lengths"))),
        ],
        columns=["item", "value"],
    )
    return DataSummary(pd.DataFrame(rows), dropped, facts, shares, used, total)


def _available_sizes(manifest: Manifest) -> dict[str, int]:
    """Split sizes before subsampling: recorded by data.py, or, for a run made before it
    recorded them, derived where that is exact."""
    stats = manifest.data.stats
    if "available_sizes" in stats:
        return dict(stats["available_sizes"])
    sizes, dropped = stats.get("split_sizes", {}), stats.get("dropped", {})
    # Cleaning keeps every row in one split and only train (and validation, with
    # data.val_size) is subsampled: what train chose from is the rest of the rows.
    if manifest.data.config.val_size is not None or "rows_read" not in stats or not sizes:
        return {}
    kept = stats["rows_read"] - sum(dropped.values())
    return {
        "train": kept - sizes.get("validation", 0) - sizes.get("test", 0),
        "validation": sizes.get("validation"),
        "test": sizes.get("test"),
    }


def _used_of(used: int | None, total: int | None) -> str:
    if used is None:
        return "not recorded"
    if not total:
        return f"{used} (the count before subsampling was not recorded)"
    return f"{used} of {total} ({used / total:.1%})" if used < total else f"all {used}"


def _flat_text(value: Any) -> str:
    """A value as plain text: dicts as `key: value` pairs, lists comma-separated."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_flat_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_flat_text(v) for v in value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


#: Manifest fields a reader checks first, in this order; the rest follow as recorded.
_MANIFEST_FIRST = ("run", "started", "space", "model", "model_path", "strategy", "seed")
#: Shown elsewhere: the data's statistics (the data panel) and the space file's text.
_MANIFEST_ELSEWHERE = ("data.stats", "space.text")


def manifest_summary(manifest: Manifest, *, params: dict[str, Param] | None = None) -> pd.DataFrame:
    """The manifest as a two-column table of plain values: nested fields flattened to
    `key.sub` (e.g. `budget.max_epochs`, `versions.torch`), lists comma-separated.

    Args:
        manifest: The run's manifest.
        params: The searched distributions; each becomes a `space.search.<key>` row
            (`choice: 0, 1, 2`) in place of the bare list of searched keys.

    Returns:
        Columns `item` (the dotted field) and `value` (text).
    """
    raw = manifest.to_dict()
    if params:
        raw["space"] = {k: v for k, v in raw["space"].items() if k != "searched"}
        raw["space"]["search"] = {
            key: f"{p.kind} [{', '.join(value_label(a) for a in p.args)}]"
            for key, p in params.items()
        }
    order = [k for k in _MANIFEST_FIRST if k in raw] + [k for k in raw if k not in _MANIFEST_FIRST]
    items: list[tuple[str, str]] = []
    for key in order:
        items += _flatten(key, raw[key])
    items = [(k, v) for k, v in items if not k.startswith(_MANIFEST_ELSEWHERE)]
    if manifest.address is None:
        items = [(k, "local" if k == "address" else v) for k, v in items]
    return pd.DataFrame(items, columns=["item", "value"])


def _flatten(key: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict) and value:
        return [pair for k, v in value.items() for pair in _flatten(f"{key}.{k}", v)]
    return [(key, _flat_text(value))]
