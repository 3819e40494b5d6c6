"""The sentences the page, its panels and the terminal share: the floor's verdict, the floor's
note, the confirmed winner, and a count with its noun (`counted`)."""

from __future__ import annotations

from sentune import config
from sentune.analysis import FloorVerdict, RunAnalysis, format_mean_std


def verdict_line(verdict: FloorVerdict) -> str:
    """One sentence: the floor beats (or ties with) the best trial, and the likely causes."""
    reasons = {
        "truncation": f"truncation (max_length {verdict.max_length} cuts "
        f"{verdict.truncated_share:.1%} of the training texts; "
        + (
            "the model takes no more, so keep both ends with train.truncation: head_tail)"
            if verdict.model_limit is not None and verdict.max_length >= verdict.model_limit
            else "try train.max_length: auto or train.truncation: head_tail)"
        ),
        "too few epochs": (
            f"too few epochs (still improving at its last epoch, {verdict.epochs:g} of "
            f"{verdict.max_epochs}; raise budget.max_epochs)"
            if verdict.epochs >= verdict.max_epochs
            else f"too few epochs (still improving when it stopped at epoch {verdict.epochs:g} "
            f"of {verdict.max_epochs})"
        ),
        "too little data": f"too little data ({verdict.train_size} training examples; "
        "TF-IDF needs fewer than fine-tuning)",
    }
    beats = "beats" if verdict.floor > verdict.best else "ties with"
    line = (
        f"The TF-IDF floor ({verdict.floor:.4f}) {beats} the best trial ({verdict.best:.4f}, "
        f"trial {verdict.trial_id})"
    )
    if not verdict.causes:
        return f"{line}; truncation, epochs and data size look fine: check the learning rate."
    plural = "s" if len(verdict.causes) > 1 else ""
    return f"{line}; likely cause{plural}: {'; '.join(reasons[c] for c in verdict.causes)}."


def floor_note(result: RunAnalysis) -> str:
    if result.floor is None:
        return f"TF-IDF floor: {result.notes.get('floor', 'not computed')}"
    floor = result.floor
    note = (
        f"TF-IDF floor: {floor.method}, trained on the same {floor.train_size} training examples "
        f"and scored on the same {floor.val_size} validation examples."
    )
    if not floor.fingerprint_matches:
        note += " WARNING: the rebuilt data differs from the data the search saw."
    return note


def confirmed_winner_line(result: RunAnalysis) -> str:
    """`winner: trial X, val_macro_f1 0.7012 ± 0.0040 over 2 seeds (rank 2 of the leaderboard)`,
    or "" without a confirmation."""
    confirmed = result.confirmation
    if confirmed is None or confirmed.winner is None:
        return ""
    seeds = confirmed.table[confirmed.table["trial_id"] == confirmed.winner]
    row = confirmed.configs.set_index("trial_id").loc[confirmed.winner]
    partial = (
        f", {int(row['n_seeds'])} of {int(row['seeds_planned'])} seeds finished"
        if row["n_seeds"] < row["seeds_planned"]
        else ""
    )
    score = format_mean_std(seeds[config.VAL_MACRO_F1].tolist())
    return (
        f"winner (best mean over seeds): trial {confirmed.winner}, {config.VAL_MACRO_F1} "
        f"{score} over {counted(len(seeds), 'seed')} "
        f"({', '.join(str(s) for s in seeds['seed'])}; leaderboard rank {int(row['rank'])}"
        f"{partial})"
    )


def counted(n: float, noun: str) -> str:
    """`1 epoch`, `2 epochs`, `0.5 epochs`."""
    return f"{n:g} {noun}" if n == 1 else f"{n:g} {noun}s"
