"""What a cell's code reads and binds, from its AST alone (no execution).

A name is an *input* when the cell loads it before binding it (in source order), so
``df = df.dropna()`` reads ``df`` while ``df = load(); df.head()`` does not. A name bound
at the top level by ``=`` (also tuple unpacking, ``+=``, ``:=`` and annotated assignment) is
an *assignment*; when its last such binding is a literal (``C = 0.5``, ``layers = [64, 32]``)
it is a *literal assignment*. Loop targets, imports, ``with ... as``, ``def`` and ``class``
are bindings but not assignments. ``X.fit(A, ...)`` calls are noted so a model's signature
can be inferred from the data it was fitted on.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_BUILTINS = frozenset(dir(builtins)) | {"get_ipython", "display", "In", "Out", "exit", "quit"}
_FIT_METHODS = frozenset({"fit", "fit_transform", "fit_predict", "partial_fit"})
_NOT_LITERAL = object()


@dataclass
class CellAnalysis:
    reads: list[str] = field(default_factory=list)
    assigned: list[str] = field(default_factory=list)
    literals: dict[str, Any] = field(default_factory=dict)
    other_binds: list[str] = field(default_factory=list)
    fit_calls: list[tuple[str | None, str]] = field(default_factory=list)

    @property
    def binds(self) -> list[str]:
        return [*self.assigned, *(n for n in self.other_binds if n not in self.assigned)]


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL


def _stored_names(nodes: Sequence[ast.AST]) -> set[str]:
    out: set[str] = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                out.add(sub.id)
            elif isinstance(sub, ast.arg):
                out.add(sub.arg)
    return out


class _Scanner(ast.NodeVisitor):
    def __init__(self) -> None:
        self.result = CellAnalysis()
        self._bound: set[str] = set()
        self._read: set[str] = set()
        self._locals: list[set[str]] = []

    # --- loads and stores -------------------------------------------------------------------
    def _load(self, name: str) -> None:
        if any(name in scope for scope in self._locals):
            return
        if name in self._bound or name in self._read or name in _BUILTINS:
            return
        self._read.add(name)
        self.result.reads.append(name)

    def _bind_other(self, name: str) -> None:
        if self._locals:
            return
        self._bound.add(name)
        if name not in self.result.other_binds:
            self.result.other_binds.append(name)

    def _assign(self, target: ast.AST, value: Any) -> None:
        """Bind ``target`` from an assignment; ``value`` is the literal or _NOT_LITERAL."""
        if isinstance(target, ast.Name):
            if self._locals:
                return
            self._bound.add(target.id)
            if target.id not in self.result.assigned:
                self.result.assigned.append(target.id)
            if value is _NOT_LITERAL:
                self.result.literals.pop(target.id, None)
            else:
                self.result.literals[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            values: list[Any] | None = None
            if isinstance(value, (tuple, list)) and len(value) == len(target.elts):
                values = list(value)
            for i, elt in enumerate(target.elts):
                self._assign(elt, values[i] if values is not None else _NOT_LITERAL)
        elif isinstance(target, ast.Starred):
            self._assign(target.value, _NOT_LITERAL)
        else:  # attribute or subscript targets: their base is read
            self.visit(target)

    def _bind_target(self, target: ast.AST) -> None:
        for sub in ast.walk(target):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                self._bind_other(sub.id)
            elif isinstance(sub, ast.Name):
                self._load(sub.id)

    # --- statements -------------------------------------------------------------------------
    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        lit = _literal(node.value)
        for target in node.targets:
            self._assign(target, lit)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self._assign(node.target, _literal(node.value))

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self._load(node.target.id)
        self.visit(node.value)
        self._assign(node.target, _NOT_LITERAL)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self._assign(node.target, _NOT_LITERAL)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self._bind_target(node.target)
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self._bind_target(item.optional_vars)
        for stmt in node.body:
            self.visit(stmt)

    visit_AsyncWith = visit_With

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self._bind_other(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self._bind_other(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def _visit_scope(
        self, node: ast.AST, args: ast.arguments | None, body: Sequence[ast.AST]
    ) -> None:
        scope = _stored_names(body)
        if args is not None:
            scope |= _stored_names([args])
        self._locals.append(scope)
        try:
            for stmt in body:
                self.visit(stmt)
        finally:
            self._locals.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for deco in node.decorator_list:
            self.visit(deco)
        for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]:
            self.visit(default)
        self._bind_other(node.name)
        self._visit_scope(node, node.args, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self.visit(expr)
        self._bind_other(node.name)
        self._visit_scope(node, None, node.body)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]:
            self.visit(default)
        self._visit_scope(node, node.args, [node.body])

    def _visit_comprehension(self, node: ast.AST, elements: list[ast.AST]) -> None:
        generators = node.generators  # type: ignore[attr-defined]
        self.visit(generators[0].iter)  # the first iterable is evaluated in the enclosing scope
        scope = _stored_names([g.target for g in generators])
        self._locals.append(scope)
        try:
            for i, gen in enumerate(generators):
                if i:
                    self.visit(gen.iter)
                for cond in gen.ifs:
                    self.visit(cond)
            for elt in elements:
                self.visit(elt)
        finally:
            self._locals.pop()

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._visit_comprehension(node, [node.elt])

    def visit_SetComp(self, node: ast.SetComp) -> None:
        self._visit_comprehension(node, [node.elt])

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> None:
        self._visit_comprehension(node, [node.elt])

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._visit_comprehension(node, [node.key, node.value])

    # --- expressions ------------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._load(node.id)
        elif isinstance(node.ctx, ast.Store):
            self._bind_other(node.id)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            not self._locals
            and isinstance(func, ast.Attribute)
            and func.attr in _FIT_METHODS
            and node.args
            and isinstance(node.args[0], ast.Name)
        ):
            receiver = func.value.id if isinstance(func.value, ast.Name) else None
            self.result.fit_calls.append((receiver, node.args[0].id))
        self.generic_visit(node)


def analyze_cell(source: str) -> CellAnalysis:
    """Analyze plain Python source (IPython syntax already transformed). SyntaxError propagates."""
    tree = ast.parse(source)
    scanner = _Scanner()
    for stmt in tree.body:
        scanner.visit(stmt)
    return scanner.result
