"""The search space of a sweep: ``NAME=SPEC`` entries parsed and checked against the notebook's
``parameters`` cell (each range or choice must fit the type of the parameter's default)."""

from __future__ import annotations

import ast
import difflib
import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nbmlops.core.pipeline import params as P
from nbmlops.exceptions import PipelineError

FORMS = "uniform(a,b), loguniform(a,b), int(a,b[,step]), intlog(a,b) or choice(v1,v2,...)"
_MAX_COMBINATIONS = 10_000  # finite spaces up to this size are covered before repeating


@dataclass(frozen=True)
class Dimension:
    """One swept parameter: a range (uniform, loguniform, int, intlog) or a choice."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: int | None = None
    choices: tuple[Any, ...] = ()
    source: str = ""  # as written

    @property
    def canonical(self) -> str:
        if self.kind == "choice":
            return f"choice({', '.join(repr(c) for c in self.choices)})"
        step = f", step={self.step}" if self.kind == "int" and self.step not in (None, 1) else ""
        return f"{self.kind}({self.low!r}, {self.high!r}{step})"

    def distribution(self) -> Any:
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "choice":
            return CategoricalDistribution(list(self.choices))
        if self.kind in ("int", "intlog"):
            return IntDistribution(
                int(self.low or 0),
                int(self.high or 0),
                log=self.kind == "intlog",
                step=self.step or 1,
            )
        return FloatDistribution(
            float(self.low or 0), float(self.high or 0), log=self.kind == "loguniform"
        )

    def values(self) -> list[Any] | None:
        """Every value, for a finite dimension (a choice or an int range); else None."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind in ("int", "intlog"):
            assert isinstance(self.low, int) and isinstance(self.high, int)
            return list(range(self.low, self.high + 1, self.step or 1))
        return None


@dataclass
class SearchSpace:
    dimensions: dict[str, Dimension]
    fixed: dict[str, Any] = field(default_factory=dict)  # passed to every trial as they are

    def distributions(self) -> dict[str, Any]:
        return {n: d.distribution() for n, d in self.dimensions.items()}

    def canonical(self) -> dict[str, str]:
        return {n: d.canonical for n, d in self.dimensions.items()}

    def combinations(self, limit: int = _MAX_COMBINATIONS) -> list[dict[str, Any]] | None:
        """All parameter combinations when the space is finite and at most ``limit`` large."""
        axes = [d.values() for d in self.dimensions.values()]
        if any(a is None for a in axes) or math.prod(len(a or ()) for a in axes) > limit:
            return None
        names = list(self.dimensions)
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]  # type: ignore[arg-type]


_ASSIGN = re.compile(r"^\s*([^=\s]*)\s*=\s*(.*?)\s*$", re.S)
_CALL = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)$", re.S)
_CALL_START = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*\(")
_KINDS = {"uniform", "loguniform", "int", "intlog", "choice"}
_WORDS = {"true": True, "false": False, "none": None, "null": None}


def _split_args(text: str, where: str) -> list[str]:
    """Split at top-level commas, keeping quoted strings and brackets whole."""
    parts: list[str] = []
    buf: list[str] = []
    quote: str | None = None
    depth = 0
    escaped = False
    for ch in text:
        if quote:
            buf.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise PipelineError(f"Unbalanced {ch!r} in the arguments", where=where)
        elif ch == "," and depth == 0:
            parts.append("".join(buf).strip())
            buf = []
            continue
        buf.append(ch)
    if quote:
        raise PipelineError(
            f"A quoted value is not closed (missing {quote})",
            where=where,
            fix="Close the quote, or leave simple words unquoted: choice(l1,l2).",
        )
    if depth:
        raise PipelineError("A bracket is not closed in the arguments", where=where)
    parts.append("".join(buf).strip())
    if parts == [""]:
        return []
    if any(not p for p in parts):
        raise PipelineError(
            "An argument is empty (two commas in a row, or a trailing comma)", where=where
        )
    return parts


def _literal(token: str) -> Any:
    """A number, a quoted string, true/false/none, or (anything else) the bare word itself."""
    word = _WORDS.get(token.lower(), token)
    if word is not token:
        return word
    try:
        return ast.literal_eval(token)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return token


def _text(token: str) -> str:
    """A choice for a string parameter: the token as written, without its quotes if quoted."""
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
        try:
            value = ast.literal_eval(token)
        except (ValueError, SyntaxError):
            return token[1:-1]
        return value if isinstance(value, str) else token[1:-1]
    return token


def _number(token: str, kind: str, where: str, integer: bool = False) -> int | float:
    value = _literal(token)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer and isinstance(value, float):
        ok = value.is_integer()
        value = int(value) if ok else value
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        what = "whole numbers" if integer else "finite numbers"
        raise PipelineError(f"{kind}() takes {what}, got {token!r}", where=where)
    return value


def _range(kind: str, args: list[str], where: str) -> tuple[Any, Any, int | None]:
    integer = kind in ("int", "intlog")
    arity = "2 or 3 (a, b, step)" if kind == "int" else "2 (a, b)"
    if len(args) not in ((2, 3) if kind == "int" else (2,)):
        raise PipelineError(
            f"{kind}() takes {arity} arguments, got {len(args)}",
            where=where,
            fix=f"Write {kind}(low,high){', e.g. int(1,10,2)' if kind == 'int' else ''}.",
        )
    low = _number(args[0], kind, where, integer)
    high = _number(args[1], kind, where, integer)
    step = int(_number(args[2], kind, where, True)) if len(args) == 3 else None
    if not low < high:
        raise PipelineError(
            f"{kind}({args[0]},{args[1]}): the low bound must be below the high bound",
            where=where,
        )
    if kind in ("loguniform", "intlog") and low <= 0:
        raise PipelineError(
            f"{kind}() needs a low bound above 0 (a log scale), got {args[0]}",
            where=where,
            fix="Use uniform()/int() for ranges that include 0 or negative numbers.",
        )
    if step is not None and (step < 1 or step > high - low):
        raise PipelineError(
            f"int() step {step} must be at least 1 and at most high - low ({high - low})",
            where=where,
        )
    if kind == "uniform" or kind == "loguniform":
        low, high = float(low), float(high)
    return low, high, step


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _check_fits(dim: Dimension, param: P.Parameter, where: str) -> None:
    """The values the dimension can take must fit the default's type (papermill writes them as
    literals the notebook then uses)."""
    if not param.literal or param.default is None:
        return
    default = param.default
    shown = param.source or repr(default)
    if isinstance(default, (list, tuple, dict)):
        raise PipelineError(
            f"Parameter {dim.name!r} cannot be swept: its default {shown} is a "
            f"{_type_name(default)}",
            where=where,
            fix="Sweep scalar parameters (numbers, strings, booleans) and build the "
            f"{_type_name(default)} from them in the notebook.",
        )
    if dim.kind == "choice":
        for value in dim.choices:
            if not P.fits(value, default):
                raise PipelineError(
                    f"choice value {value!r} ({_type_name(value)}) does not fit parameter "
                    f"{dim.name!r}, whose default {shown} is {_type_name(default)}",
                    where=where,
                    fix=f"Give {_type_name(default)} values.",
                )
        return
    if isinstance(default, (bool, str)):
        raise PipelineError(
            f"{dim.kind}() draws numbers, but parameter {dim.name!r} has the "
            f"{_type_name(default)} default {shown}",
            where=where,
            fix="Sweep it with choice(...).",
        )
    if isinstance(default, int) and dim.kind in ("uniform", "loguniform"):
        raise PipelineError(
            f"{dim.kind}() draws floats, but parameter {dim.name!r} has the int default {shown}",
            where=where,
            fix=f"Use int(a,b) or intlog(a,b), or make the default a float ({dim.name} = "
            f"{float(default)!r}).",
        )


def _unknown(name: str, declared: P.NotebookParameters, where: str) -> PipelineError:
    close = difflib.get_close_matches(name, declared.names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return PipelineError(
        f"Unknown parameter {name!r} for {declared.notebook.name}; its parameters cell declares: "
        f"{', '.join(declared.names) or '(none)'}.{hint}",
        where=where,
        fix="Sweep a declared name, or add it to the notebook's parameters cell.",
    )


def parse_dimension(text: str, declared: P.NotebookParameters) -> tuple[str, Dimension | None, Any]:
    """``NAME=SPEC`` -> (name, dimension, None), or (name, None, value) for a fixed value."""
    where = f"--param {text!r}"
    m = _ASSIGN.match(text) if isinstance(text, str) else None
    if not m or not m.group(1):
        raise PipelineError(
            "A search-space entry must be NAME=SPEC",
            where=where,
            fix=f"Write e.g. C=loguniform(0.001,10); SPEC is {FORMS}, or a fixed value.",
        )
    name, spec = m.group(1), m.group(2)
    P.check_name(name, where)
    if declared.cell_index is None:
        raise PipelineError(
            f"Notebook {declared.notebook.name!r} has no cell tagged 'parameters', so "
            f"{name!r} has nowhere to go",
            where=where,
            fix="In JupyterLab select the cell with the defaults, open the property inspector "
            "and add the tag 'parameters'.",
        )
    param = declared.parameters.get(name)
    if param is None:
        raise _unknown(name, declared, where)
    call = _CALL.match(spec)
    if call is None and _CALL_START.match(spec):
        raise PipelineError(
            f"{spec!r} does not parse: a closing parenthesis is missing, or text follows it",
            where=where,
            fix=f"Write NAME=SPEC with SPEC one of {FORMS}.",
        )
    if call is None:
        if not spec:
            raise PipelineError(f"No value or range given for {name!r}", where=where)
        value = P.parse_cli_value(spec, param)
        P.validate({name: value}, declared, where=where)
        return name, None, value
    kind, inner = call.group(1), call.group(2)
    if kind not in _KINDS:
        close = difflib.get_close_matches(kind, sorted(_KINDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PipelineError(
            f"Unknown distribution {kind!r}{hint}",
            where=where,
            fix=f"Use {FORMS}. A fixed string that looks like a call can be written "
            "choice('text(1)').",
        )
    args = _split_args(inner, where)
    if kind == "choice":
        if not args:
            raise PipelineError("choice() needs at least one value", where=where)
        as_text = param.literal and isinstance(param.default, str)
        choices = tuple(_text(a) if as_text else _literal(a) for a in args)
        for value in choices:
            if not isinstance(value, (str, int, float, bool, type(None))):
                raise PipelineError(
                    f"choice value {value!r} is a {_type_name(value)}; choices are numbers, "
                    "strings, true/false or none",
                    where=where,
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise PipelineError(f"choice value {value!r} is not a finite number", where=where)
        seen: set[Any] = set()
        for value in choices:
            marker = (type(value), value)
            if marker in seen:
                raise PipelineError(f"choice() lists {value!r} twice", where=where)
            seen.add(marker)
        dim = Dimension(name, kind, choices=choices, source=spec)
    else:
        low, high, step = _range(kind, args, where)
        dim = Dimension(name, kind, low=low, high=high, step=step, source=spec)
    _check_fits(dim, param, where)
    samples = list(dim.choices) if kind == "choice" else [dim.low, dim.high]
    for sample in samples:
        P.validate({name: sample}, declared, where=where)
    return name, dim, None


def parse_space(
    specs: Iterable[str] | Mapping[str, Any], declared: P.NotebookParameters
) -> SearchSpace:
    """Parse ``NAME=SPEC`` entries (or a mapping NAME -> SPEC text or fixed value)."""
    items: list[str] = []
    fixed_values: dict[str, Any] = {}
    if isinstance(specs, Mapping):
        for name, spec in specs.items():
            if isinstance(spec, str):
                items.append(f"{name}={spec}")
            else:
                fixed_values[name] = spec
    elif isinstance(specs, str):
        items = [specs]
    else:
        items = list(specs)
    dims: dict[str, Dimension] = {}
    fixed: dict[str, Any] = {}
    for text in items:
        name, dim, value = parse_dimension(text, declared)
        if name in dims or name in fixed:
            raise PipelineError(f"Parameter {name!r} is given twice", where=f"--param {text!r}")
        if dim is not None:
            dims[name] = dim
        else:
            fixed[name] = value
    for name, value in fixed_values.items():
        if name in dims or name in fixed:
            raise PipelineError(f"Parameter {name!r} is given twice")
        fixed[name] = value
    if fixed:
        fixed = P.validate(fixed, declared)
    if not dims:
        raise PipelineError(
            "Nothing to sweep: no parameter is given a range or a choice",
            where=str(declared.notebook),
            fix=f"Add --param NAME=SPEC with SPEC one of {FORMS}.",
        )
    return SearchSpace(dims, fixed)
