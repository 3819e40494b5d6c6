"""The search: Ray Tune's `Tuner` with Optuna's samplers (via `OptunaSearch`) and ASHA, and the
confirmation of the winner over seeds. The only package that imports Ray, and only inside
functions, so that importing it (as the CLI does) does not wait for Ray.

The flow, one module a step: `options` (what the command asked) → `resources` and `preflight`
(settled before Ray and before a run folder exists) → `cluster` (Ray started on loopback, or
joined) → `driver` (the data, the run folder, the Tuner, the finish) → `tuner` (the trainable
around `train.trial.run_trial`, the RunConfig) with `searcher` (Optuna's sampler on the run's
journal, ASHA) and `callbacks` (terminal lines from `progress`, the trial ledger) → `confirm`
(the top configurations over seeds) → `refit` (the winner retrained on the whole training split
before an export); `recovery` settles what a killed search left, `where`
says where a run is kept, `strategies` names sampler × scheduler pairs; `growth` adds trials to a
search that ended and `warmstart` seeds a new study with an earlier run's trials.
"""

from sentune.search.callbacks import progress_callback, trial_ledger
from sentune.search.cluster import LOOPBACK, check_address, ray_session, start_ray
from sentune.search.driver import ANALYSIS_IMPORTS, TUNE_IMPORTS, grow, resume, run
from sentune.search.options import SearchOptions
from sentune.search.recovery import finished_trials
from sentune.search.refit import needs_refit, refit, refit_summary
from sentune.search.searcher import build_scheduler, build_searcher, config_list

# Tune's saved state names the trainable by this path (`sentune.search._trainable`, as every run
# since the first has pickled it): a run started by an earlier sentune resumes through it.
from sentune.search.tuner import _trainable
from sentune.search.where import resume_command

__all__ = [
    "ANALYSIS_IMPORTS",
    "LOOPBACK",
    "TUNE_IMPORTS",
    "SearchOptions",
    "_trainable",
    "build_scheduler",
    "build_searcher",
    "check_address",
    "config_list",
    "finished_trials",
    "grow",
    "progress_callback",
    "needs_refit",
    "ray_session",
    "refit",
    "refit_summary",
    "resume",
    "resume_command",
    "run",
    "start_ray",
    "trial_ledger",
]
