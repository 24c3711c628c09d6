"""Metric names and the keys of a trial's per-epoch report: the one place they are spelled.

A trial reports, every epoch, the mean and std over its members of each validation metric
(`val_uar_mean`, `val_uar_std`, ...). The sweep file's `search.metric: val_uar` names the metric;
the scheduler prunes on `val_uar_mean`, Optuna optimizes OBJECTIVE. The store's columns and trial
statuses are spelled in orchestrator/store/schema.py (built from these names).
"""

from __future__ import annotations

# Per-member metric names (metrics.py computes them; train.py prefixes split names).
ACC = "acc"  # accuracy = weighted accuracy (WA)
UAR = "uar"  # unweighted average recall = mean per-class recall
F1_MACRO = "f1_macro"
F1_WEIGHTED = "f1_weighted"
LOSS = "loss"
SCALAR_METRICS = (ACC, UAR, F1_MACRO, F1_WEIGHTED)

SPLITS = ("train", "val", "test")


def split_metric(split: str, metric: str) -> str:
    """`split_metric("val", "uar") == "val_uar"`."""
    return f"{split}_{metric}"


def mean_key(name: str) -> str:
    return f"{name}_mean"


def std_key(name: str) -> str:
    return f"{name}_std"


# Keys of the per-epoch report of a trial (trainable.py -> tune.report -> store.py).
EPOCH = "epoch"
OBJECTIVE = "objective"  # mean over members of each member's best validation metric so far
OBJECTIVE_STD = "objective_std"  # sample std (ddof 1) over members of the same; NaN for one
MEMBERS_ACTIVE = "members_active"
MEMBERS_COLLAPSED = "members_collapsed"
MEMBER_ROWS_JSON = "member_rows_json"  # JSON list: one dict per member for this epoch
MEMBER_RESULTS_JSON = "member_results_json"  # JSON list: best epoch + test metrics per member
RUNTIME_JSON = "runtime_json"  # JSON dict: micro_batch, accumulation, peaks, oom_retries, ...
# PreparedData.info key and runtime key (the trials column): clips listed by the corpus but
# skipped as missing or unreadable (MELD), kept in the feature cache; 0 when none
DATA_SKIPPED_CLIPS = "data_skipped_clips"
# runtime key and trials column: what measured_peak_bytes measures. On CUDA the allocator's
# peak of tensor bytes (torch.cuda.max_memory_allocated), comparable with the planner's
# estimate; on the CPU the worker process' peak resident set (ru_maxrss: code, Ray, the data and
# the allocator's caches too), NOT comparable with the estimate (tensor bytes).
MEASURED_PEAK_KIND = "measured_peak_kind"
PEAK_CUDA_ALLOCATED = "cuda_max_allocated"
PEAK_CPU_RSS = "cpu_rss"
CHECKPOINT_FILE = "trainer.pt"  # in each Tune checkpoint dir: torch.save(trainer.state_dict())
# Not "done": Ray sets its own `done` when the scheduler stops a trial.
DONE = "trial_finished"  # the trial trained all its epochs (or every member stopped)
# The last report of a trial that failed for a reason retrying cannot fix (a SersweepError: bad
# config, non-finite loss, does not fit): trainable.py reports it instead of raising, so Tune's
# FailureConfig retries only what kills the worker. One line `Type: message`; plain traceback.
ERROR_REASON = "error_reason"
ERROR_TRACEBACK = "error_traceback"
# Racing over folds (orchestrator/racing.py; the stage loop in trainable.py): the last report of
# a trial that lost its race against the incumbent; RACE_EPOCH, the epoch within the first stage
# (what ASHA counts when racing: later stages report without it, so ASHA leaves them alone).
RACED_OUT = "raced_out"
RACE_EPOCH = "race_epoch"

VAL_UAR = split_metric("val", UAR)
VAL_UAR_MEAN = mean_key(VAL_UAR)
TRAIN_LOSS = split_metric("train", LOSS)
VAL_LOSS = split_metric("val", LOSS)
# What a member records at each validation epoch; also what `search.metric` may select.
VAL_METRICS = tuple(split_metric("val", m) for m in (*SCALAR_METRICS, LOSS))
SELECTABLE_METRICS = VAL_METRICS
TEST_METRICS = tuple(split_metric("test", m) for m in SCALAR_METRICS)
