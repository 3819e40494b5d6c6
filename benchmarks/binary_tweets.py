"""Write the bench's second data set: the embedded tweets without the neutral class, a binary task
(negative 16,186 against positive 6,954: imbalanced) with other label names and sizes than the
three-class default. `make bench-binary` passes the CSV it writes to `sentune bench --dataset`.

    python benchmarks/binary_tweets.py [OUT]    # default .cache/sentune/binary-tweets.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

from sentune import config
from sentune.config import DataConfig
from sentune.data.load import load_source

DEFAULT_OUT = Path(config.CACHE_DIR) / "binary-tweets.csv"


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else DEFAULT_OUT
    splits, _ = load_source(DataConfig())
    frame = splits["train"]
    binary = frame[frame["label"] != "neutral"]
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    binary.to_csv(part, index=False)
    part.replace(out)  # whole or not at all
    counts = binary["label"].value_counts().to_dict()
    print(f"{out}: {len(binary)} tweets {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
