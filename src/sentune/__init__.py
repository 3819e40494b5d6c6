"""sentune: hyperparameter search and benchmarking for BERT-family sentiment classifiers."""

__version__ = "0.1.0"
