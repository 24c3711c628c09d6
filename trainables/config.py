"""The keys of the `data`, `train`, `search` and `resources` sections of a sweep file, each
declared once (`Key`: default, what it accepts, a one-line doc): the one place they are spelled.

Model keys are the keyword arguments of each model's constructor (trainables/models/).
orchestrator/sweepfile/sections.py validates a sweep file against these declarations and fills
in the defaults; trainables/trial_config.py derives the trial's typed, frozen sections from them
(`TrialConfig`: built once per trial, defaults filled and checked there); `member_count` is the
one place the number of members (folds x seeds) is computed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from trainables.names import SELECTABLE_METRICS, VAL_UAR
from trainables.user_cache import default_cache_dir


@dataclass(frozen=True)
class Key:
    """One key of a sweep-file section, declared once: its default, what it accepts and a one-line
    doc. Validation (orchestrator/sweepfile/sections.py: check_key), the defaults (DATA_DEFAULTS,
    ...) and the docs' key table (docs/design.md, `key_table`) all derive from it.

    Accepts: `choices` (a closed set) or `registry` (the names of a registry, read on use), else
    `types` (None: the default's type); None when the default is None or `nullable`; `words`:
    strings accepted besides a number (gpus_per_trial: auto). Numbers are finite, an integer at
    most MAX_INT, and within ge / gt / le / lt where given.
    """

    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    types: tuple[type, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    nullable: bool = False
    words: tuple[str, ...] = ()
    registry: str | None = None  # "corpora" | "features": trainables/data registries
    shown: str | None = None  # the default as the docs show it, where it depends on the machine

    def accepts_none(self) -> bool:
        return self.default is None or self.nullable

    def bounds(self) -> list[tuple[str, float]]:
        """[(operator, bound)] in the order they are checked, e.g. [(">", 0), ("<=", 600.0)]."""
        pairs = ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
        return [(op, bound) for op, bound in pairs if bound is not None]

    def violation(self, name: str, value: Any, bounded: bool = True) -> str | None:
        """What is wrong with `value` for this key, None when nothing: null where not accepted,
        a word or choice outside the declared ones, a value of an undeclared type (a tuple
        passes for a list, any mapping for a dict), a number not finite, too large or (when
        `bounded`) out of bounds (the sweep file's own checks add the type messages with lines;
        this is what a config that skips the sweep file is checked with)."""
        if value is None:
            return None if self.accepts_none() else f"{name} must not be null"
        if value in self.words:
            return None
        if self.choices is not None:
            return None if value in self.choices else (
                f"expected one of {', '.join(map(str, self.choices))}, but got {value!r}")
        types = self.types or (type(self.default),)
        if any(isinstance(value, _SHAPES.get(t, t)) for t in types if t not in (int, float)):
            return None  # a list, mapping, string or bool where one is declared
        if int in types or float in types:
            whole = float not in types
            if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
                return f"expected {'an integer' if whole else 'a number'}, but got {value!r}"
            return number_problem(name, value, self.bounds() if bounded else ())
        return f"expected {_accepts(self)}, but got {value!r}"


# what a declared non-numeric type accepts: a frozen config holds tuples and FrozenDicts
_SHAPES: dict[type, type | tuple[type, ...]] = {list: (list, tuple), dict: Mapping}
_HOLDS = {">=": lambda v, b: v >= b, ">": lambda v, b: v > b, "<=": lambda v, b: v <= b,
          "<": lambda v, b: v < b}
_MIRROR = {">=": "<=", ">": "<"}


def number_problem(name: str, value: Any, bounds: Sequence[tuple[str, float]] = ()) -> str | None:
    """A number is finite, an integer at most MAX_INT in size (NaN passes every comparison; a
    huge count hangs), and within `bounds` ([(">=", 1), ...]); anything else passes."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be a finite number, but got {value}"
    if isinstance(value, int) and abs(value) > MAX_INT:
        return f"{name} must be at most {MAX_INT} in size, but got {value}"
    lows = [(_MIRROR[op], bound) for op, bound in bounds if op in _MIRROR]
    for op, bound in bounds:
        if not _HOLDS[op](value, bound):
            # past an upper bound: the whole range ("0 < x <= 1"); below a lower one: that bound
            low = "".join(f"{b:g} {o} " for o, b in lows) if op in ("<=", "<") else ""
            return f"{low}{name} {op} {bound:g} must hold, but got {value}"
    return None


MAX_INT = 2**31 - 1  # the largest integer any key takes (a huge count hangs; seeds fit int32)
MAX_SECONDS = 600.0  # the longest data.max_seconds (the spec and prepare_data check it)
# data.val: how each fold's validation speakers are chosen (trainables/data/folds.py)
VAL_PROTOCOLS = ("next_session", "test_session_other", "train_fraction")
# data.normalize: none | utterance | speaker (each speaker its own stats) | train (training split)
NORMALIZE_KINDS = ("none", "utterance", "speaker", "train")
SSL_DEFAULTS: dict[str, Any] = {  # data.ssl, validated by trainables/data/ssl/settings.py
    # wavlm_base_plus | wavlm_base | wavlm_large | hubert_base | hubert_large |
    # wav2vec2_base | wav2vec2_large | wav2vec2_large_lv60k
    "model": "wavlm_base_plus",
    "checkpoint": "torchaudio",  # torchaudio (download once) | random (tests) | a state dict
    "layers": "all",  # all | [i, ...] hidden states kept (0 = transformer input, i = layer i)
    "arch": None,  # tests/dev only: tiny | small | {torchaudio builder argument: value}
    "batch_seconds": None,  # padded audio per extraction batch; None = auto (CPU 16, GPU fit)
    "dtype": "float16",  # float16 | float32, of the cache
    "device": "auto",  # auto | cpu | cuda: where the encoder runs
}

# One line per key: `"name": Key(default, "doc", bounds or choices),`.
DATA: dict[str, Key] = {
    "corpus": Key("synthetic", "the corpus (trainables/data/corpora.py: CORPORA); multi = several",
                  registry="corpora"),
    "corpora": Key(None, "corpus: multi -> a list of {corpus, root, name, folds, ...} "
                   "(trainables/data/multi.py)", types=(list,)),
    "root": Key(None, "the corpus release directory, or the manifest file", types=(str,)),
    "classes": Key(4, "IEMOCAP: 4 (excited merged into happy) or 6; a manifest: the class names",
                   types=(int, list), ge=2),
    "features": Key("logmel", "raw | logmel | mfcc | compare | egemaps | ssl (features.FEATURES)",
                    registry="features"),
    "n_mels": Key(64, "mel bands of logmel", ge=1),
    "n_mfcc": Key(40, "coefficients of mfcc", ge=1),
    "compare_deltas": Key(False, "compare: add the delta features"),
    "downsample": Key(1, "integer factor along time (scipy.signal.resample_poly)", ge=1),
    "max_seconds": Key(4.0, "crop/pad every utterance to this length", gt=0, le=MAX_SECONDS),
    "normalize": Key("train", "none | utterance | speaker | train (training split's mean/std)",
                     choices=NORMALIZE_KINDS),
    "folds": Key("by_session", "how the test folds are cut",
                 choices=("by_session", "by_speaker", "official")),
    "val": Key("next_session", "which speakers validate (trainables/data/folds.py): a speaker of "
               "the next session | the test session's other | val_fraction of the training ones",
               choices=VAL_PROTOCOLS),
    "val_fraction": Key(0.2, "val: train_fraction -> this share of the training speakers",
                        gt=0, le=1.0),
    "n_folds": Key(5, "by_speaker: k speaker-disjoint folds", ge=2),
    "use_folds": Key(None, "train only the first N folds (null = all)", types=(int,), ge=1),
    "seed": Key(0, "synthetic corpus generation seed", ge=0),
    "synthetic_utterances": Key(800, "utterances of the synthetic corpus", ge=1),
    "cache_dir": Key(default_cache_dir(), "where prepared features are cached: absolute, per "
                     "user (SERSWEEP_CACHE_DIR, else $XDG_CACHE_HOME/sersweep, else "
                     "~/.cache/sersweep; trainables/user_cache.py)", types=(str,),
                     shown="~/.cache/sersweep"),
    "ssl": Key(SSL_DEFAULTS, "features: ssl -> the frozen encoder (data/ssl/settings.py)"),
}

TRAIN: dict[str, Key] = {
    "epochs": Key(20, "epochs per member", ge=1),
    "batch_size": Key(32, "the LOGICAL batch the optimizer sees", ge=1),
    "micro_batch": Key(None, "null = batch_size; the planner may shrink it (gradient "
                       "accumulation)", types=(int,), ge=1),
    "norm_batch": Key(8, "BatchNorm statistics per ghost batch of this many samples "
                      "(models/sample_noise.py): the numbers do not depend on the micro-batch",
                      ge=2),
    "optimizer": Key("adamw", "adamw | sgd", choices=("adamw", "sgd")),
    "lr": Key(5.0e-4, "learning rate", gt=0),
    "weight_decay": Key(0.01, "decoupled weight decay (adamw) / L2 (sgd)", ge=0),
    "momentum": Key(0.9, "sgd only", ge=0),
    "warmup_epochs": Key(0, "linear warmup epochs", ge=0),
    "schedule": Key("cosine", "cosine | constant (after warmup)", choices=("cosine", "constant")),
    "grad_clip": Key(1.0, "max grad norm; 0 = off", ge=0),
    "amp": Key("auto", "auto (bf16/fp16 autocast on CUDA, off on CPU) | on | off",
               choices=("auto", "on", "off")),
    "seeds": Key([0], "members = folds x seeds (distinct integers)"),
    "reweight": Key(False, "class-weighted cross-entropy"),
    "rebalance": Key(False, "class-balanced sampling"),
    # A member collapses after `collapse_patience` stuck epochs in a row: near chance, degenerate
    # or unchanged predictions (trainables/collapse.py: epoch_collapse, loss_improved):
    "collapse_patience": Key(3, "stuck epochs in a row (after the warmup, with a flat training "
                             "loss) that stop a member; 0 = the rule is off", ge=0),
    "collapse_margin": Key(0.05, "val UAR <= 1/n_classes + margin counts (near chance)",
                           ge=0, le=1.0),
    "collapse_top_share": Key(0.95, "the most predicted class >= this share counts (degenerate)",
                              gt=0, le=1.0),
    "device": Key("auto", "auto | cpu | cuda", choices=("auto", "cpu", "cuda")),
}

# search.confirm (orchestrator/confirm.py) and search.racing (orchestrator/racing.py): a mapping
# of these keys; null or false = off, true = the defaults; `top: 0` / `first: 0` = off too.
CONFIRM: dict[str, Key] = {
    "top": Key(3, "finalists retrained with fresh seeds after the search (0 = off)", ge=0),
    "seeds": Key(2, "fresh seeds per finalist", ge=1),
}
RACING: dict[str, Key] = {
    "first": Key(2, "test sets every trial trains before it can be raced out (0 = off)", ge=0),
    "alpha": Key(0.05, "chance that a trial as good as the incumbent is raced out (over all "
                 "its looks)", gt=0, lt=1.0),
}

SEARCH: dict[str, Key] = {
    "metric": Key(VAL_UAR, "the validation metric optimized (val_<uar|acc|f1_macro|...>)",
                  choices=SELECTABLE_METRICS),
    "mode": Key(None, "max | min; null = the metric's own direction (loss: min)",
                choices=("max", "min")),
    "sampler": Key("tpe", "the Optuna sampler", choices=("tpe", "random", "grid", "cmaes", "qmc")),
    "trials": Key(10, "trials of the sweep", ge=1),
    "seed": Key(0, "the sampler's seed (null = random)", ge=0, nullable=True),
    "max_concurrent": Key(None, "trials at once (null = as the resources allow)", types=(int,),
                          ge=1),
    # Tune's driver state grows with every trial of one Tuner (bench/soak.py: ~250 KiB/trial), so
    # a long sweep runs as consecutive Tuners, each resumed from the store (runner.run_sweep).
    "tuner_trials": Key(200, "trials per Ray Tune Tuner", ge=1),
    "scheduler": Key("asha", "asha | none, or a mapping of the SCHEDULER keys",
                     types=(str, dict)),
    "params": Key(None, "the searched keys {dotted.key: distribution} "
                  "(orchestrator/sweepfile/params.py)", types=(dict,)),
    "baseline": Key(True, "compute the reference baseline at the sweep's start (cached)"),
    "confirm": Key({name: key.default for name, key in CONFIRM.items()},
                   "retrain the top configurations after the search (search.confirm keys); "
                   "runs where the finalists trained >= 3 test sets", types=(dict, bool),
                   nullable=True),
    "racing": Key(None, "race trials over test sets (search.racing keys); null = off",
                  types=(dict, bool), nullable=True),
    "loggers": Key([], "trackers fed each trial's params and epochs through Ray Tune's "
                   "callbacks: tensorboard | mlflow | wandb (orchestrator/trackers.py)",
                   types=(list,)),
}

SCHEDULER: dict[str, Key] = {
    "type": Key("asha", "asha | none", choices=("asha", "none")),
    "grace_period": Key(1, "epochs before a trial may be stopped", ge=1),
    "reduction_factor": Key(3.0, "ASHA's reduction factor", gt=1),
    "max_t": Key(None, "the last epoch ASHA considers (null = train.epochs)", types=(int,), ge=1),
}

RESOURCES: dict[str, Key] = {
    "cpus_per_trial": Key(1, "CPUs per trial", types=(int, float), gt=0),
    "gpus_per_trial": Key("auto", "GPUs (or a fraction) per trial; auto = the planner's choice",
                          types=(int, float), ge=0, words=("auto",)),
    "gpu_memory_fraction": Key(0.9, "the share of a GPU's memory the planner fills", gt=0,
                               le=1.0),
    "memory_budget": Key(None, "a size with a unit (2GiB, 512MB) a trial may use", types=(str,)),
    "max_failures": Key(1, "retries of a failed trial (-1 = forever)", ge=-1),
}

# section name -> its declaration (the docs' key table walks these).
SECTIONS: dict[str, dict[str, Key]] = {"data": DATA, "train": TRAIN, "search": SEARCH,
                                       "search.scheduler": SCHEDULER, "search.confirm": CONFIRM,
                                       "search.racing": RACING, "resources": RESOURCES}


def defaults(keys: Mapping[str, Key]) -> dict[str, Any]:
    """{key: default} of a section's declaration (a fresh copy)."""
    return {name: copy.deepcopy(key.default) for name, key in keys.items()}


DATA_DEFAULTS: dict[str, Any] = defaults(DATA)
TRAIN_DEFAULTS: dict[str, Any] = defaults(TRAIN)


def _accepts(key: Key) -> str:
    if key.choices is not None:
        text = " | ".join(map(str, key.choices))
    elif key.registry is not None:
        text = f"a name of the {key.registry} registry"
    else:
        types = key.types or (type(key.default),)
        text = " or ".join({"float": "number", "dict": "mapping"}.get(t.__name__, t.__name__)
                           for t in types)
        if key.words:
            text += " or " + " | ".join(key.words)
    bounds = ", ".join(f"{op} {bound:g}" for op, bound in key.bounds())
    text += f", {bounds}" if bounds else ""
    return text + (" or null" if key.accepts_none() else "")


def key_table() -> str:
    """The Markdown table of every declared key (docs/design.md holds it; a test compares)."""
    rows = ["| key | default | accepts | what |", "|---|---|---|---|"]
    for section, keys in SECTIONS.items():
        for name, key in keys.items():
            default = key.shown or ("{...}" if isinstance(key.default, dict) else key.default)
            cells = [f"`{section}.{name}`", f"`{default}`", _accepts(key), key.doc]
            rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


DISTILL_DEFAULTS: dict[str, Any] = {
    "teacher": None,  # {results: <teacher sweep dir or name>, pick: best | <trial id>}
    "temperature": 2.0,  # T of the soft labels (the KD term is scaled by T^2)
    "kd_weight": 1.0,  # weight of KL(teacher/T || student/T); 0 = no soft-label loss
    "mse_weight": 1.0,  # weight of the hidden-state MSE (summed over the matched layers)
    # hidden layers matched, counted from the INPUT side (0 = the first hidden of both models):
    # N = the first N ([0, ..., N-1]), or an explicit list of indices (-1 = the last, the head's)
    "mse_layers": 2,
    # one of trainables.distill_loss.EXPERIMENTS: overrides kd_weight/mse_layers
    "experiment": None,
}
TEACHER_DEFAULTS: dict[str, Any] = {"results": None, "pick": "best"}


def with_defaults(section: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A copy of `defaults` updated with `section` (no validation: orchestrator/sweepfile
    validates)."""
    merged = copy.deepcopy(defaults)
    merged.update(copy.deepcopy(section))
    return merged


def member_count(n_folds: int, train: Mapping[str, Any]) -> int:
    """Members of a trial: folds x seeds (each at least 1, as the trial needs one of each)."""
    return max(1, int(n_folds)) * max(1, len(train.get("seeds") or TRAIN_DEFAULTS["seeds"]))


FoldT = TypeVar("FoldT")


def member_pairs(folds: Sequence[FoldT], train: Mapping[str, Any]) -> list[tuple[FoldT, int]]:
    """The members of a trial in index order: member i is (fold, seed) = pairs[i], folds outer,
    seeds inner (itertools.product order). The trainer's members and the reference baseline's
    rows (trainables/egemaps_baseline.py) both come from here, so they pair member by member."""
    return [(fold, int(seed)) for fold in folds for seed in train["seeds"]]
