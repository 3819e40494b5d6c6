"""The run folder's layout: the name of every file and folder in `trials/<run>/`, the trial
statuses and the keys a confirmation trial adds. Nobody outside `runs` spells one of them.

Layout (Ray Tune writes the per-trial files; the names are Ray's and this module's):

```
trials/<space>-<YYYYmmdd-HHMMSS>/
  sentune.json                    the manifest (`Manifest`)
  optuna.journal                  the Optuna study of the run (JournalStorage)
  tracking.jsonl                  where the run is tracked (MLflow, W&B): run ids, steps logged
  <trial_id>/params.json          the trial's configuration (dotted keys)
  <trial_id>/result.json          one JSON line per evaluation
  <trial_id>/sentune_status.json  completed | retrying | error, failures, error line
  <trial_id>/error.txt            Ray's record of the latest failure
  <trial_id>/checkpoint_*/        model files, trial_state.json, val_predictions.npy
                                  [, training_state.pt]
  confirm/<trial_id>-seed<n>/     a confirmation trial: the search trial's configuration
                                  retrained to the full budget with `train.seed` n (same files)
```
"""

MANIFEST = "sentune.json"
#: The run's Optuna study (`optuna.storages.JournalStorage` file): one trial per Ray trial, its
#: per-epoch intermediate values, PRUNED when ASHA stopped it, COMPLETE or FAIL otherwise.
OPTUNA_JOURNAL = "optuna.journal"
#: Where the run is tracked (`sentune.tracking`): the trackers, the MLflow parent run and each
#: trial's tracked run, the last step each logged, so that a resumed search continues them.
#: Not `.json`: Ray Tune copies a run's `.json` files into its staging when it restores an
#: experiment and back later, which would put an old copy of a file the driver rewrites back.
TRACKING_FILE = "tracking.jsonl"
#: The Optuna user attribute that names a study trial's Ray trial id (its folder in the run).
RAY_TRIAL_ID_ATTR = "ray_trial_id"
#: The Optuna user attribute of a trial that was a start point (`recipe`, `start 1`, …).
START_POINT_ATTR = "sentune_start"
#: Per trial, written by the driver: {"status": "completed"|"error"|"retrying", "failures": n,
#: "error": one line}. A trial retried after a failure keeps Ray's `error.txt`; this says whether
#: the failure was its last word.
TRIAL_STATUS = "sentune_status.json"
PARAMS_FILE = "params.json"
RESULTS_FILE = "result.json"
ERROR_FILE = "error.txt"
CHECKPOINT_GLOB = "checkpoint_*"
#: In each checkpoint: the evaluation's metrics and whether it was the best so far (JSON).
STATE_FILE = "trial_state.json"
#: In each checkpoint of a resumable trial: what continuing needs besides the weights
#: (optimizer, scheduler, step, epoch, RNG states, best-so-far). Plain tensors, dicts and lists,
#: read back with `torch.load(weights_only=True)`.
TRAINING_STATE_FILE = "training_state.pt"
#: In each checkpoint: the validation split's labels and the predictions its score came from
#: (int32, shape 2 x n), so that the report reads the winner's errors instead of predicting again.
PREDICTIONS_FILE = "val_predictions.npy"
#: The model weights' config in a checkpoint: a checkpoint without it is incomplete.
MODEL_CONFIG_FILE = "config.json"

COMPLETED, RETRYING, ERROR = "completed", "retrying", "error"
#: The confirmation trials of a run (a Tune experiment of its own inside the run folder), kept
#: apart so that the search's leaderboard never mixes them in.
CONFIRM_DIR = "confirm"
#: A refit (`search.refit`): the winner's configuration retrained on the whole training split,
#: a Tune experiment of its own in `<run>/refit-<trial id>/`, with its record (`REFIT_FILE`:
#: training size, seed, data fingerprint, scores, wall time).
REFIT_PREFIX = "refit-"
#: In a refit trial's configuration: the search trial whose configuration it retrains (not a
#: dotted key, like `CONFIRMS_KEY`).
REFITS_KEY = "refits"
REFIT_FILE = "refit.json"
#: Where running trials say how far into their epoch they are (`progress.ProgressFile`), for
#: the search's terminal lines; removed when the search ends.
PROGRESS_DIR = ".progress"
#: In a confirmation trial's configuration: the search trial whose configuration it retrains.
#: Not a dotted key, so the trial's sections ignore it.
CONFIRMS_KEY = "confirms"
#: The trial seed's dotted key: a confirmation trial changes it and nothing else.
SEED_KEY = "train.seed"
