"""How listing commands print: a rich table on a terminal, the same table with every value
whole when stdout is a pipe or a file, or one JSON document with ``--json``."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document instead of a table.")


class Output(Console):
    """A console that wraps long lines on a terminal only: through a pipe or into a file every
    line is printed whole, so ``grep`` finds what it looks for."""

    def print(self, *objects: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if not self.is_terminal:
            kwargs.setdefault("soft_wrap", True)
        super().print(*objects, **kwargs)


def piped() -> bool:
    """Whether stdout goes to a pipe or a file rather than a terminal."""
    return not sys.stdout.isatty()


def print_json(document: Any) -> None:
    """One JSON document on stdout (non-JSON values such as timestamps as text)."""
    sys.stdout.write(json.dumps(document, default=str) + "\n")
    sys.stdout.flush()


def listing(
    title: str | None,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    right: Sequence[str] = (),
) -> Table:
    """A table of plain text cells (no rich markup is read from the values)."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left")
    for row in rows:
        table.add_row(*(_text(v) for v in row))
    return table


def _text(value: Any) -> Any:
    from rich.text import Text

    return Text("" if value is None else str(value))


def print_table(table: Table, console: Console | None = None) -> None:
    """The table on a terminal as rich lays it out; through a pipe at its natural width, so no
    value is cut or wrapped (rich assumes 80 columns when stdout is not a terminal)."""
    console = console or Console(highlight=False)
    if console.is_terminal:
        console.print(table)
        return
    for column in table.columns:
        column.no_wrap = True
        column.overflow = "ignore"
    probe = Console(width=1_000_000, file=sys.stdout, highlight=False, color_system=None)
    width = Measurement.get(probe, probe.options, table).maximum
    Console(width=max(width, 20), file=sys.stdout, highlight=False, color_system=None).print(table)
