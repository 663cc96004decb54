"""A notebook's ``parameters`` cell, and the checks every injected parameter passes.

papermill pastes parameter names into the injected cell as they are and ``repr``s values, so a
crafted name runs code and an arbitrary object may not round-trip. Everything is checked here,
before any kernel starts. The parameters cell is read with :mod:`ast` (not papermill's regex
inspection): we need the defaults as values to check types against, and this path must not pay
for importing papermill when a cached pipeline has nothing to run.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nbmlops.core.pipeline.notebook import read_json
from nbmlops.exceptions import PipelineError

_NO_DEFAULT = object()
PLAIN_TYPES = (bool, int, float, str, type(None))


@dataclass
class Parameter:
    name: str
    default: Any = _NO_DEFAULT  # _NO_DEFAULT: an expression, not a literal
    source: str = ""
    help: str = ""
    annotation: str | None = None

    @property
    def literal(self) -> bool:
        return self.default is not _NO_DEFAULT

    @property
    def type_name(self) -> str:
        if self.annotation:
            return self.annotation
        if not self.literal:
            return "any"
        return type(self.default).__name__


@dataclass
class NotebookParameters:
    notebook: Path
    cell_index: int | None
    parameters: dict[str, Parameter] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.parameters)


def parameters_cell_index(nb: dict[str, Any]) -> int | None:
    for i, cell in enumerate(nb["cells"]):
        if "parameters" in (cell.get("metadata", {}).get("tags") or []):
            return i
    return None


def read_parameters(path: str | Path, nb: dict[str, Any] | None = None) -> NotebookParameters:
    """The names, defaults and help of the notebook's ``parameters`` cell."""
    nb = nb if nb is not None else read_json(path)
    index = parameters_cell_index(nb)
    result = NotebookParameters(Path(path), index)
    if index is None:
        return result
    source = nb["cells"][index]["source"]
    if isinstance(source, list):
        source = "".join(source)
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise PipelineError(
            f"The parameters cell of {str(path)!r} is not valid Python: {err.msg} "
            f"(line {err.lineno})",
            fix="Fix the cell tagged 'parameters'.",
        ) from err
    lines = source.splitlines()
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        annotation = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
            annotation = ast.unparse(node.annotation)
        for target in targets:
            if not isinstance(target, ast.Name):
                continue
            param = Parameter(target.id, annotation=annotation)
            if value is not None:
                param.source = ast.get_source_segment(source, value) or ""
                try:
                    param.default = ast.literal_eval(value)
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    param.default = _NO_DEFAULT
            line = lines[node.lineno - 1] if node.lineno <= len(lines) else ""
            if "#" in line:
                param.help = line.split("#", 1)[1].strip()
            result.parameters[target.id] = param
    return result


# --- checks ----------------------------------------------------------------------------------
def check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise PipelineError(
            f"Parameter name {name!r} is not a Python identifier",
            where=where,
            fix="Use letters, digits and '_' (not starting with a digit, not a keyword): "
            "papermill writes the name into the notebook as code.",
        )
    return name


def check_plain(value: Any, path: str, where: str, depth: int = 0) -> None:
    """Numbers, strings, booleans, None, and lists/dicts of them (string keys)."""
    if depth > 32:
        raise PipelineError(f"Parameter {path} is nested too deeply", where=where)
    if isinstance(value, float) and not math.isfinite(value):
        raise PipelineError(
            f"Parameter {path} is {value!r}, which papermill cannot write as a literal",
            where=where,
            fix="Use a finite number, or a string the notebook converts.",
        )
    if isinstance(value, PLAIN_TYPES):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain(item, f"{path}[{i}]", where, depth + 1)
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise PipelineError(
                    f"Parameter {path} has a non-string key {k!r}",
                    where=where,
                    fix="Use string keys in dict parameters.",
                )
            check_plain(item, f"{path}[{k!r}]", where, depth + 1)
        return
    raise PipelineError(
        f"Parameter {path} is a {type(value).__name__}, not plain data",
        where=where,
        fix="Pass numbers, strings, booleans, None, or lists and dicts of them.",
    )


def fits(value: Any, default: Any) -> bool:
    """Whether ``value`` has a type the parameter's ``default`` accepts."""
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    if isinstance(default, dict):
        return isinstance(value, dict)
    return True


def validate(
    given: dict[str, Any], declared: NotebookParameters, where: str | None = None
) -> dict[str, Any]:
    """Check names, plainness, that each name is declared, and that each value fits its default.
    Returns the parameters to inject (ints passed for float defaults become floats)."""
    where = where or str(declared.notebook)
    if not isinstance(given, dict):
        raise PipelineError(
            f"Parameters must be a mapping, got {type(given).__name__}", where=where
        )
    out: dict[str, Any] = {}
    for name, value in given.items():
        check_name(name, where)
        check_plain(value, repr(name), where)
        if declared.cell_index is None:
            raise PipelineError(
                f"Notebook {str(declared.notebook)!r} has no cell tagged 'parameters', so "
                f"parameter {name!r} has nowhere to go",
                fix="In JupyterLab select the cell with the defaults, open the property "
                "inspector and add the tag 'parameters'.",
            )
        param = declared.parameters.get(name)
        if param is None:
            close = difflib.get_close_matches(name, declared.names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise PipelineError(
                f"Unknown parameter {name!r} for {declared.notebook.name}; its parameters cell "
                f"declares: {', '.join(declared.names) or '(none)'}.{hint}",
                where=where,
                fix="Use one of the declared names, or add it to the notebook's parameters cell.",
            )
        if param.literal and not fits(value, param.default):
            raise PipelineError(
                f"Parameter {name!r} is {type(value).__name__} {value!r}, but its default "
                f"{param.source} is {type(param.default).__name__}",
                where=where,
                fix=f"Pass a value of type {type(param.default).__name__}.",
            )
        if (
            param.literal
            and isinstance(param.default, float)
            and isinstance(value, int)
            and not isinstance(value, bool)
        ):
            value = float(value)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


# --- parsing from the command line ----------------------------------------------------------
def parse_cli_value(text: str, declared: Parameter | None = None) -> Any:
    """``-p name value``: a string default keeps the text as it is; otherwise YAML's plain
    scalars and flow collections (``3``, ``0.1``, ``true``, ``null``, ``[1, 2]``)."""
    if declared is not None and declared.literal and isinstance(declared.default, str):
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, (PLAIN_TYPES, list, dict)):
        return value
    return text  # dates and other YAML types stay strings


def load_params_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise PipelineError(f"Parameters file {str(path)!r} does not exist", fix="Check the path.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise PipelineError(
            f"Parameters file {str(path)!r} is not valid YAML: {err}",
            fix="Write one `name: value` per line.",
        ) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PipelineError(
            f"Parameters file {str(path)!r} must hold a mapping of names to values, "
            f"got {type(data).__name__}",
            fix="Write one `name: value` per line.",
        )
    return data


def parse_cli(
    pairs: list[tuple[str, str]], files: list[str | Path], declared: NotebookParameters
) -> dict[str, Any]:
    """Merge ``-f`` files (in order) and ``-p`` pairs (which win), then validate."""
    merged: dict[str, Any] = {}
    for f in files:
        merged.update(load_params_file(f))
    for name, text in pairs:
        merged[name] = parse_cli_value(text, declared.parameters.get(name))
    return validate(merged, declared)
