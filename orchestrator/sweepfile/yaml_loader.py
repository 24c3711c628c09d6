"""Safe YAML loading for sweep files: refuses duplicate keys, tabs, binary and non-UTF-8 input,
Python tags; records the line of every key path so that errors point at the line.

Only yaml.SafeLoader is used; nothing in a sweep file can construct a Python object.
Bounded before anything is built (issue 23.6): at most MAX_BYTES of text, MAX_DEPTH levels of
nesting and MAX_NODES nodes once every alias is expanded (a 400-byte alias bomb expands to
millions), checked on PyYAML's event stream, which is not recursive; each limit is one SpecError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.sweepfile.spec_error import SpecError

KeyPath = tuple[str, ...]
MAX_BYTES = 1 << 20  # a sweep file is a few kB; 1 MiB leaves room for long comments
MAX_DEPTH = 64  # a sweep file nests about 6 levels (search.params.<key>.when.<key>)
MAX_NODES = 100_000  # scalars, lists and mappings, each alias counted as what it expands to
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _DuplicateKeyError(Exception):
    def __init__(self, key: object, first: int, second: int) -> None:
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


class SpecLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (YAML 1.2 forbids it; PyYAML would
    silently keep the last value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKeyError(key, seen[key], line)
                    seen[key] = line
                except TypeError:  # unhashable key: SafeConstructor reports it below
                    pass
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads `1e-3` as a string; YAML 1.2 and every user read it as a float.
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+|[-+]?\.[0-9]+[eE][-+]?[0-9]+)$"),
    list("-+0123456789."),
)


@dataclass(frozen=True)
class LoadedYaml:
    """The document and the 1-based line of each key path (("search", "params", "train.lr"))."""

    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        for n in range(len(path), 0, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return None


def _record_lines(
    node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], stack: set[int]
) -> None:
    if id(node) in stack:  # a recursive alias
        return
    stack.add(id(node))
    if isinstance(node, yaml.MappingNode):
        merged = [value for key, value in node.value if key.tag == _MERGE_TAG]
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                sub = (*path, str(key_node.value))
                lines.setdefault(sub, key_node.start_mark.line + 1)
                _record_lines(value_node, sub, lines, stack)
        for value_node in merged:  # explicit keys win over merged ones (`<<: *anchor`)
            _record_lines(value_node, path, lines, stack)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = (*path, str(i))
            lines.setdefault(sub, item.start_mark.line + 1)
            _record_lines(item, sub, lines, stack)
    stack.discard(id(node))


def _decode(raw: bytes, file: str) -> str:
    if not raw.strip():
        raise SpecError(file, None, "the file is empty; a sweep file is a YAML mapping with the "
                        "sections name, data, model, train, search, resources")
    if b"\x00" in raw:
        raise SpecError(file, None, "this is a binary file, not YAML text (it contains NUL bytes)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        byte = raw[exc.start]
        raise SpecError(file, None, f"the file is not UTF-8 text: byte 0x{byte:02x} at offset "
                        f"{exc.start} cannot be decoded; save it as UTF-8", line) from None


def _check_tabs(text: str, file: str) -> None:
    for number, line in enumerate(text.splitlines(), start=1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            raise SpecError(file, None, "a tab character in the indentation; YAML indents with "
                            "spaces only", number)


def _syntax_error(exc: yaml.YAMLError, file: str) -> SpecError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    if problem and "constructor for the tag" in problem:
        found = re.search(r"tag '([^']*)'", problem)
        tag = (found.group(1) if found else problem).replace("tag:yaml.org,2002:", "!!")
        return SpecError(file, None, f"the tag {tag!r} is not allowed: sweep files are plain YAML "
                         "(safe loading only, no Python objects)", line)
    detail = f"{problem} ({context})" if context else problem
    return SpecError(file, None, f"YAML syntax error: {detail}", line)


def check_bounds(text: str, file: str) -> None:
    """Refuse text over MAX_BYTES, nesting deeper than MAX_DEPTH, or more than MAX_NODES nodes
    with aliases expanded; walks the event stream (no recursion, aliases never expanded)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise SpecError(file, None, f"the file is {size} bytes; a sweep file is at most "
                        f"{MAX_BYTES} bytes (1 MiB)")
    loader = SpecLoader(text)
    starts: list[tuple[str | None, int]] = []  # (anchor, node count when it opened)
    sizes: dict[str, int] = {}
    count = 0
    try:
        while (event := loader.get_event()) is not None:
            line = event.start_mark.line + 1
            if isinstance(event, yaml.AliasEvent):
                count += sizes.get(event.anchor, 1)
            elif isinstance(event, yaml.ScalarEvent):
                count += 1
                if event.anchor:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                count += 1
                starts.append((event.anchor, count))
                if len(starts) > MAX_DEPTH:
                    raise SpecError(file, None, f"lists and mappings nest more than "
                                    f"{MAX_DEPTH} levels deep; a sweep file nests a few", line)
            elif isinstance(event, yaml.CollectionEndEvent) and starts:
                anchor, opened = starts.pop()
                if anchor:
                    sizes[anchor] = count - opened + 1
            if count > MAX_NODES:
                raise SpecError(file, None, f"the document expands to more than {MAX_NODES} "
                                "values (aliases `*name` repeat what their anchor `&name` "
                                "holds); a sweep file is a few hundred", line)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, file) from None
    finally:
        loader.dispose()


def parse_yaml_text(text: str, file: str) -> LoadedYaml:
    """Parse one YAML document from `text` within the bounds of `check_bounds`; every failure is
    a SpecError naming `file`."""
    check_bounds(text, file)
    loader = SpecLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return LoadedYaml(None, {})
        lines: dict[KeyPath, int] = {}
        _record_lines(node, (), lines, set())
        data = loader.construct_document(node)
    except _DuplicateKeyError as exc:
        raise SpecError(file, None, f"duplicate key {exc.key!r}: first on line {exc.first}, "
                        f"again on line {exc.second}; each key may appear once per mapping",
                        exc.second) from None
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, file) from None
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. an unhashable key, bad date
        raise SpecError(file, None, f"YAML could not be read: {exc}") from None
    finally:
        loader.dispose()
    return LoadedYaml(data, lines)


def load_yaml_file(path: Path) -> LoadedYaml:
    """Read and parse a sweep file; refuses empty, binary, non-UTF-8 and tab-indented files."""
    file = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:  # not read at all (a 50 MB file costs minutes to scan)
            raise SpecError(file, None, f"the file is {size} bytes; a sweep file is at most "
                            f"{MAX_BYTES} bytes (1 MiB)")
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(file, None, f"cannot read the file: {exc.strerror or exc}") from None
    text = _decode(raw, file)
    _check_tabs(text, file)
    loaded = parse_yaml_text(text, file)
    if loaded.data is None:
        raise SpecError(file, None, "the file holds no YAML document (only comments or blanks); "
                        "a sweep file is a mapping with name, data, model, train, search")
    return loaded


def parse_override_value(text: str, file: str, via: str) -> Any:
    """The value of `--set key=value`, parsed as one YAML value (`3`, `1e-3`, `[0, 1]`, `null`)."""
    if text.strip() == "":
        return None
    try:
        return parse_yaml_text(text, file).data
    except SpecError as exc:
        raise SpecError(file, None, f"the value {text!r} is not a YAML value: {exc.message}",
                        via=via) from None


def parse_recorded_spec(text: str, file: str) -> dict[str, Any]:
    """A results folder's spec.yaml (the sweep as run): a mapping, within the bounds; a file
    edited by hand into something else is a SpecError naming it and the way out."""
    hint = ("restore it from the sweep file, or start a new sweep with --results DIR or "
            "another `name:`")
    try:
        data = parse_yaml_text(text, file).data
    except SpecError as exc:
        raise SpecError(file, None, f"the recorded sweep cannot be read ({exc.message}); {hint}",
                        exc.line) from None
    if not isinstance(data, dict):
        raise SpecError(file, None, f"the recorded sweep is not a mapping of sections; {hint}")
    return data
