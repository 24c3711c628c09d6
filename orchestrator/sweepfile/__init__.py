"""The sweep file: YAML -> validated, frozen SweepSpec (every mistake a SpecError naming the file,
line, dotted key and what was expected, before Ray starts).

- load.py         load_spec: read, --set overrides, validate, freeze; the spec flags of the CLI
- sweep.py        SweepSpec and its parts (frozen); config_for: sampled values -> trial config
- sections.py     data, model, train, search (scalars), resources
- params.py       search.params: what each key addresses, the values it may take, condition order
- distributions.py ParamSpec: one searched parameter, its YAML syntax
- distill.py      the distill section
- checks.py       Ctx (where an error is), type checks, did-you-mean, the trainables registries
- yaml_loader.py  safe YAML with the line of every key
- errors.py       SpecError
Sampling the params (Optuna) is orchestrator/search.py; nothing here imports Optuna.
"""

from __future__ import annotations

from orchestrator.sweepfile.distributions import ParamSpec, parse_param
from orchestrator.sweepfile.load import (
    SEARCH_SPACES,
    add_spec_arguments,
    load_spec,
    load_spec_from_args,
    resolve_spec_path,
)
from orchestrator.sweepfile.sections import parse_size
from orchestrator.sweepfile.spec_error import SpecError
from orchestrator.sweepfile.sweep_spec import (
    SAME_ON_RESUME,
    ResourceSpec,
    SchedulerSpec,
    SearchSpec,
    SweepSpec,
    apply_params,
    decode_params,
    spec_diff,
)
from trainables.frozen import thaw

__all__ = [
    "SAME_ON_RESUME", "SEARCH_SPACES", "ParamSpec", "ResourceSpec", "SchedulerSpec", "SearchSpec",
    "SpecError", "SweepSpec", "add_spec_arguments", "apply_params", "decode_params",
    "load_spec", "load_spec_from_args", "parse_param", "parse_size", "resolve_spec_path",
    "spec_diff", "thaw",
]
