"""Load, clean, split and tokenize the labelled texts of a search, once.

A source is the embedded tweets corpus, a Hugging Face dataset (by registry name or hub id) or a
local file or folder. `load_splits` cleans, deduplicates and splits it (stratified, seeded);
`prepare` tokenizes every split once, untruncated, and caches the token ids on disk so that every
trial of a search (and the next search on the same data) reuses them.

Modules, one job each, in the order of the steps: `load` (a source's raw splits), `splits`
(clean, dedupe, split, subsample, fingerprint), `tokens` (tokenize once, the token cache),
`prepared` (`prepare`, `PreparedData`, `Split`); and beside them `text` (the one text cleaning,
serving's too), `stratify` (the stratified split in NumPy), `batching` (truncation, padding,
batches; torch-free). This package knows nothing of training or of runs.
"""

from sentune.lazy import lazy_exports

#: Each public name and the module that defines it: imported on first use (PEP 562), so that
#: serving (`serve.predict`), which needs only `text` and `batching`, imports no pandas.
_PUBLIC = {
    "DATASETS": "load",
    "LABEL_COLUMNS": "load",
    "SPLITS": "load",
    "SPLIT_ALIASES": "load",
    "SUPPORTED_SUFFIXES": "load",
    "TEXT_COLUMNS": "load",
    "DatasetSource": "load",
    "embedded_tweets_path": "load",
    "DROP_REASONS": "splits",
    "load_splits": "splits",
    "PreparedData": "prepared",
    "Split": "prepared",
    "prepare": "prepared",
}

__all__ = sorted(_PUBLIC)


__getattr__ = lazy_exports(__name__, _PUBLIC)
