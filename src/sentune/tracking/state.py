"""The run's record of where it is tracked (`runs.TRACKING_FILE`), so that a resumed search, its
confirmation and its export log to the same places and continue the same tracked runs.

One JSON object a line, each a change: `{"log_to": [...]}` (the trackers chosen), or
`{"tracker": "mlflow", "set": {...}}` (its settings and ids: tracking URI, experiment, parent
run, whether it answered this command) and `{"tracker": ..., "trial": key, "set": {...}}` (a
trial's tracked run, the last step logged to it, how it ended). Reading folds the lines in
order; a line cut short by a kill ends the record. Appending a line per evaluation costs little
where rewriting the whole record would not; `compact` rewrites it whole when a command starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sentune import runs
from sentune.runs import storage


class TrackingState:
    """The folded record of one run, and the file it is kept in (None: kept in memory only, for
    an experiment whose trials are drawn in TensorBoard alone)."""

    def __init__(self, path: Path | None = None, store: storage.Storage | None = None):
        self.path = path
        self.store = store
        self.log_to: list[str] = []
        self.trackers: dict[str, dict[str, Any]] = {}
        self.trials: dict[str, dict[str, dict[str, Any]]] = {}

    @classmethod
    def load(cls, run_dir: Path, store: storage.Storage) -> TrackingState:
        """The record of the run in `run_dir` (empty when it was never tracked)."""
        state = cls(runs.tracking_file(run_dir), store)
        if state.path.is_file():
            for line in state.path.read_text().splitlines():
                try:
                    change = json.loads(line)
                except json.JSONDecodeError:
                    break  # cut short by a kill
                state._apply(change)
        return state

    def tracker(self, name: str) -> dict[str, Any]:
        """A tracker's settings and ids ({} when it was never opened)."""
        return self.trackers.get(name, {})

    def trial(self, name: str, key: str) -> dict[str, Any]:
        """A trial's record with a tracker (its run id, last step logged, how it ended)."""
        return self.trials.get(name, {}).get(key, {})

    def choose(self, log_to: list[str]) -> None:
        """Record the trackers the run logs to."""
        self._write([{"log_to": list(log_to)}])

    def forget(self, name: str) -> None:
        """Forget a tracker's ids and trials (it now logs to another server or experiment)."""
        self._write([{"tracker": name, "forget": True}])

    def update(self, changes: list[tuple[str, str | None, dict[str, Any]]]) -> None:
        """Record `(tracker, trial key or None, fields)` changes, in one write."""
        self._write([_change(name, key, fields) for name, key, fields in changes if fields])

    def compact(self) -> None:
        """Rewrite the record as one line per tracker and trial (atomically)."""
        if self.path is None or not (self.log_to or self.trackers or self.trials):
            return
        lines = [{"log_to": self.log_to}]
        lines += [_change(name, None, fields) for name, fields in self.trackers.items()]
        lines += [
            _change(name, key, fields)
            for name, trials in self.trials.items()
            for key, fields in trials.items()
        ]
        runs.write_text(self.path, "".join(json.dumps(line) + "\n" for line in lines))
        self._push()

    def _write(self, changes: list[dict[str, Any]]) -> None:
        for change in changes:
            self._apply(change)
        if self.path is None or not changes:
            return
        with self.path.open("a") as out:
            out.write("".join(json.dumps(change, default=str) + "\n" for change in changes))
        self._push()

    def _push(self) -> None:
        if self.store is not None and self.store.remote:
            storage.push(self.store, self.path.parent.name, [self.path])

    def _apply(self, change: dict[str, Any]) -> None:
        if "log_to" in change:
            self.log_to = list(change["log_to"])
            return
        name, key, fields = change.get("tracker"), change.get("trial"), change.get("set", {})
        if not name:
            return
        if change.get("forget"):
            self.trackers.pop(name, None)
            self.trials.pop(name, None)
        elif key is None:
            self.trackers.setdefault(name, {}).update(fields)
        else:
            self.trials.setdefault(name, {}).setdefault(key, {}).update(fields)


def _change(name: str, key: str | None, fields: dict[str, Any]) -> dict[str, Any]:
    change: dict[str, Any] = {"tracker": name}
    if key is not None:
        change["trial"] = key
    change["set"] = fields
    return change
