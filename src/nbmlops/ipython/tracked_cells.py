"""``%%track`` cells run by IPython itself, as untracked cells are.

A cell magic is a function call: IPython would compile the body inside it, so the cell could
not use top-level ``await`` (IPython only runs a cell on its async runner when the cell's own
code awaits), its traceback would show the magic's call and a second ``Cell In[...]``, and the
kernel's count would already have moved on. So a cleanup input transformer drops the
``%%track`` line and hands IPython the body, and the run is begun on ``pre_run_cell`` and ended
on ``post_execute``: IPython compiles, awaits, displays and reports errors exactly as for the
same body without the magic line.

Cells this path does not take stay with the magic: a magic line that does not parse (the magic
reports it), ``--snapshot`` (a refused commit must stop the cell before it runs, which a hook
cannot do), and a ``%%track`` run while another tracked cell is running (the magic refuses it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.formatters import BaseFormatter
from traitlets import ObjectName, Unicode

from nbmlops.api.tracking import get_tracker

_MAGIC = "%%track"


class _ShownFigures(BaseFormatter):
    """Sees every object IPython displays and hands figures to the tracker: ``plt.show()`` on
    the inline backend (which closes the figure right after), ``display(fig)``, and the
    backend's own display at the end of the cell. It formats nothing, so no output carries its
    type. Not a registered type printer: the inline backend pops every formatter's printer for
    ``Figure`` whenever it is configured (on the first ``import matplotlib.pyplot``)."""

    format_type = Unicode("application/x-nbmlops-figure-seen")
    print_method = ObjectName("_repr_nbmlops_never_")  # no object has it

    def __call__(self, obj: Any) -> None:
        if any(
            cls.__name__ == "Figure" and cls.__module__ == "matplotlib.figure"
            for cls in type(obj).__mro__
        ):
            try:
                get_tracker().figure_shown(obj)
            except Exception:  # showing a figure must never fail because of us
                pass
        return None


@dataclass
class _Running:
    info: Any  # IPython's ExecutionInfo of the cell
    run: Any


class TrackedCells:
    """Installs the transformer and the hooks on a shell; one per loaded extension."""

    def __init__(self, shell: Any, magics: Any):
        self.shell = shell
        self.magics = magics
        self.running: _Running | None = None

        def strip_magic_line(lines: list[str]) -> list[str]:
            taken = self._take(lines)
            return lines if taken is None else self._clean(taken[1])

        # check_complete (is this input finished?) must keep treating the cell as a cell magic
        strip_magic_line.has_side_effects = True  # type: ignore[attr-defined]
        self.transformer = strip_magic_line

    def install(self) -> None:
        watch = _ShownFigures(parent=self.shell.display_formatter)
        self.shell.display_formatter.formatters[watch.format_type] = watch
        self.shell.input_transformers_cleanup.append(self.transformer)
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self.shell.events.register("post_execute", self.post_execute)
        self.shell.events.register("post_run_cell", self.post_run_cell)

    def uninstall(self) -> None:
        self.shell.display_formatter.formatters.pop(_ShownFigures.format_type.default_value, None)
        if self.transformer in self.shell.input_transformers_cleanup:
            self.shell.input_transformers_cleanup.remove(self.transformer)
        for event, fn in (
            ("pre_run_cell", self.pre_run_cell),
            ("post_execute", self.post_execute),
            ("post_run_cell", self.post_run_cell),
        ):
            try:
                self.shell.events.unregister(event, fn)
            except ValueError:
                pass

    # --- which cells ---------------------------------------------------------------------------
    def _take(self, lines: list[str]) -> tuple[str, list[str]] | None:
        """(magic line, body lines) if IPython should run this cell's body itself."""
        if not lines or not lines[0].startswith(_MAGIC):
            return None
        rest = lines[0][len(_MAGIC) :]
        if rest and not rest[0].isspace():
            return None  # another magic whose name starts with "track"
        line = rest.strip()
        try:
            args = self.magics.track.parser.parse_argstring(line)
        except (IPythonUsageError, ValueError):
            return None
        tracker = get_tracker()
        if args.snapshot or tracker.active is not None or self.running is not None:
            return None
        return line, lines[1:]

    def _clean(self, body: list[str]) -> list[str]:
        """The body as IPython cleans a cell of its own (leading blank lines, indentation)."""
        for transform in self.shell.input_transformers_cleanup:
            if transform is self.transformer:
                break
            body = transform(body)
        return body

    # --- the run -------------------------------------------------------------------------------
    def pre_run_cell(self, info: Any) -> None:
        raw = getattr(info, "raw_cell", None) or ""
        taken = self._take(raw.splitlines(keepends=True))
        if taken is None or not get_tracker().enabled:
            return
        line, body = taken
        code = getattr(info, "transformed_cell", None) or self.shell.transform_cell(raw)
        # The shell counts a cell kept in history before pre_run_cell in IPython 9, after the
        # cell in IPython 8; the display hook's prompt number is right in both.
        count = self.shell.displayhook.prompt_count if info.store_history else None
        if count is None:
            count = self.shell.execution_count
        try:
            run = self.magics.begin(self.magics.parse(line), line, "".join(body), code, count)
        except Exception as err:  # the cell runs anyway: say why it is not tracked
            print(f"nbmlops: this cell runs untracked: {err}", file=sys.stderr)
            return
        self.running = _Running(info, run)
        # The inline backend closes the cell's figures in its own post_execute hook: capture
        # before it, as the magic did when it ended inside the cell.
        callbacks = self.shell.events.callbacks["post_execute"]
        if callbacks and callbacks[0] != self.post_execute:
            callbacks.remove(self.post_execute)
            callbacks.insert(0, self.post_execute)

    def post_execute(self) -> None:
        running = self.running
        result = getattr(self.shell, "last_execution_result", None)
        if running is None or result is None or result.info is not running.info:
            return  # not ours (a nested cell), or ended below
        self._end(result.error_in_exec or result.error_before_exec)

    def post_run_cell(self, result: Any) -> None:
        running = self.running
        if running is None:
            return
        if result is None:  # the kernel cancelled the cell (an interrupt of an awaiting cell)
            self._end(KeyboardInterrupt())
        elif result.info is running.info:
            self._end(result.error_in_exec or result.error_before_exec)

    def _end(self, error: BaseException | None) -> None:
        running, self.running = self.running, None
        assert running is not None
        self.magics.end(running.run, error)
