"""The one text-cleaning function: training (`data/`) and serving (`serve/predict.py`) call it.

A model sees at serving time what it saw in training only if both paths clean a text the same
way, so the rules live here once. Plain Python and `re`: no torch, no pandas, so the onnxruntime
serving path stays light.
"""

from __future__ import annotations

import html
import re

HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
WHITESPACE = re.compile(r"\s+")
# A UTF-8 lead byte followed by a continuation byte, both read as cp1252/latin-1 characters.
MOJIBAKE = re.compile(
    "[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6"
    "\u02dc\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]"
)


def clean_text(text: str) -> str:
    """A text as the model is trained on it and served with.

    Broken encodings are repaired (`â€™` → `’`), HTML tags become spaces and entities are
    unescaped (`great<br />phone &amp; case` → `great phone & case`), control characters become
    spaces and whitespace runs collapse to one space, stripped at both ends.

    Args:
        text: One raw text.

    Returns:
        The cleaned text ("" when nothing is left).
    """
    if MOJIBAKE.search(text):
        text = repair_mojibake(text)
    text = HTML_TAG.sub(" ", text)
    # Tags go before entities: an escaped `&lt;b&gt;` is text, not a tag to strip.
    if "&" in text:
        text = html.unescape(text)
    text = CONTROL.sub(" ", text)
    return WHITESPACE.sub(" ", text).strip()


def repair_mojibake(text: str) -> str:
    """Undo UTF-8 read as cp1252 or latin-1 (`â€™` → `’`) when the whole text round-trips."""
    for encoding in ("cp1252", "latin-1"):
        try:
            return text.encode(encoding).decode("utf-8")
        except UnicodeError:
            continue
    return text
