"""``%%track`` and ``%track``: parse the magic line, run the cell, hand the rest to the core."""

from __future__ import annotations

import ast
import inspect
import re
import sys
from typing import Any

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import (
    MagicHelpFormatter,
    argument,
    magic_arguments,
    parse_argstring,
)
from IPython.display import display

from nbmlops.api.tracking import (
    CaptureOptions,
    CellOrigin,
    RunSummary,
    get_tracker,
    locate_cell,
    notebook_from_environment,
    runs_in_store_now,
    summary_html,
    summary_text,
)
from nbmlops.exceptions import NbmlopsError


class SummaryView:
    """Displays a RunSummary: HTML in notebooks, text elsewhere."""

    def __init__(self, summary: RunSummary):
        self.summary = summary

    def _repr_html_(self) -> str:
        return summary_html(self.summary)

    def __repr__(self) -> str:
        return summary_text(self.summary)


def _split_params(values: list[str] | None) -> tuple[dict[str, str], set[str]]:
    explicit: dict[str, str] = {}
    forced: set[str] = set()
    for item in values or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not key.isidentifier() and not key.replace(".", "_").replace("-", "_").isidentifier():
            raise NbmlopsError(
                f"Bad --param {item!r}", fix="Write --param name=value or --param name."
            )
        if sep:
            explicit[key] = value
        else:
            forced.add(key)
    return explicit, forced


@magics_class
class TrackMagics(Magics):
    def __init__(self, shell: Any):
        super().__init__(shell)
        self._notebook: str | None = None
        self._notebook_looked_up = False
        self._handles: dict[str, Any] = {}
        self._listener_added = False

    @magic_arguments()
    @argument("name", nargs="?", help="Run name (default: cell-<execution count>).")
    @argument("-e", "--experiment", help="Experiment name (default: the notebook's name).")
    @argument(
        "-p",
        "--param",
        action="append",
        metavar="K=V|NAME",
        help="Add a param K=V, or force variable NAME to be recorded as a param.",
    )
    @argument("-m", "--metric", action="append", metavar="NAME", help="Force NAME to be a metric.")
    @argument("-i", "--ignore", action="append", metavar="NAME", help="Never capture NAME.")
    @argument(
        "--dry-run",
        action="store_true",
        help="Run the cell and show what would be captured; log nothing.",
    )
    @argument("--no-models", action="store_true", help="Do not log fitted models.")
    @argument("--no-data", action="store_true", help="Do not digest data.")
    @argument("--no-figures", action="store_true", help="Do not log figures.")
    @argument(
        "--snapshot",
        action="store_true",
        help="Commit the frames and arrays the cell reads as data versions before it runs.",
    )
    @line_cell_magic
    def track(self, line: str, cell: str | None = None) -> Any:
        """Track a cell as an MLflow run: params, metrics, models, data, figures, code.

        As a line magic: ``%track off`` / ``%track on`` switch capture, ``%track status`` shows
        the store and the shipping state, ``%track sync`` waits until everything is in MLflow.
        """
        __tracebackhide__ = True
        if cell is None:
            return self._line(line.strip())
        args = self.parse(line)
        tracker = get_tracker()
        if not tracker.enabled:
            return self._execute(cell)
        code = self.shell.transform_cell(cell)
        run = self.begin(args, line, cell, code, self._prompt_number())
        error: BaseException | None = None
        try:
            if args.snapshot and not args.dry_run:
                self._snapshot(run)
            return self._execute(cell, code)
        except BaseException as err:
            error = err
            raise
        finally:
            self.end(run, error)

    def parse(self, line: str) -> Any:
        """The magic line's arguments; a UsageError with the usage line when they are wrong."""
        try:
            return parse_argstring(self.track, line)
        except IPythonUsageError as err:
            usage = " ".join(self.track.parser.format_usage().split())
            raise IPythonUsageError(f"{err}\n{usage}\n(%%track? shows the help)") from None

    def begin(self, args: Any, line: str, cell: str, code: str, count: int | None) -> Any:
        """Start the run of a tracked cell whose body is ``cell`` (``code`` once transformed)."""
        explicit, forced = _split_params(args.param)
        options = CaptureOptions(
            params=explicit,
            force_params=forced,
            force_metrics=set(args.metric or []),
            ignore=set(args.ignore or []),
            models=not args.no_models,
            data=not args.no_data,
            figures=not args.no_figures,
        )
        origin = self._origin(line, cell, count)
        return get_tracker().begin(
            code,
            self.shell.user_ns,
            origin=origin,
            batch=_batch_cell(origin.cell_id),
            name=args.name,
            experiment=args.experiment,
            options=options,
            dry_run=args.dry_run,
        )

    def end(self, run: Any, error: BaseException | None) -> None:
        """Capture, journal and show the summary of a tracked cell's run."""
        summary = get_tracker().end(run, self.shell.user_ns, error, wait=self._wait(run.origin))
        self._show(summary)

    def _prompt_number(self) -> int | None:
        """The number in the cell's prompt (``In [8]``) while the cell runs. IPython 9 counts
        the cell before running it, IPython 8 after: the result it fills in has the number."""
        result = getattr(self.shell.displayhook, "exec_result", None)
        count = getattr(result, "execution_count", None)
        return count if count is not None else getattr(self.shell, "execution_count", None)

    def _snapshot(self, run: Any) -> None:
        """Commit each data input as a version named after its variable; the run records
        ``data.<var> = NAME@k``. A refusal (access rules) fails the run before the cell runs."""
        from nbmlops.api import data

        for name in run.snapshot.data_inputs:
            result = data.commit(self.shell.user_ns[name], name, message=f"snapshot for {run.name}")
            get_tracker().log_param(f"data.{name}", result.version.ref)

    def _wait(self, origin: CellOrigin) -> bool:
        """Batch kernels (papermill/nbclient send no cellId) are killed about 2.5 s after their
        last cell: with ``ship: auto`` their runs go to a detached shipper (see
        ``Tracker.start``); where none could be started, a tracked cell waits for MLflow."""
        mode = get_tracker().settings.ship
        if mode != "auto":
            return mode == "wait"
        return _batch_cell(origin.cell_id)

    def _line(self, word: str) -> Any:
        tracker = get_tracker()
        if word in ("", "status"):
            shipper = tracker.shipper
            print(
                f"nbmlops tracking is {'on' if tracker.enabled else 'off'}\n"
                f"  store    {tracker.settings.resolved_tracking_uri}\n"
                f"  journal  {tracker.settings.journal_dir}\n"
                f"  pending  {shipper.pending} record(s) to ship; "
                f"last error: {shipper.stats.last_error or 'none'}"
            )
            trouble = tracker.trouble
            if trouble is not None:
                print(
                    f"  problem  {trouble.where()}: {trouble.total_lost} record(s) lost, "
                    f"{tracker.held_records} run start/end record(s) waiting for room"
                )
            if tracker.batch_note is not None:
                print(f"  batch    runs are {tracker.batch_note}")
            if tracker.wait_given_up:
                print(
                    f"  waiting  tracked cells no longer wait for MLflow: {tracker.wait_given_up}"
                )
        elif word == "off":
            tracker.enabled = False
            print("nbmlops: %%track cells now run without capture (`%track on` to resume)")
        elif word == "on":
            tracker.enabled = True
            print("nbmlops: %%track capture is on")
        elif word == "sync" and tracker.settings.ship == "defer":
            print(
                "nbmlops: this kernel's runs are shipped by the command running it "
                "(`nbmlops run`, a pipeline) as its cells end"
            )
        elif word == "sync":
            ok = tracker.ship_now(60)
            print(
                "nbmlops: everything is in MLflow"
                if ok
                else f"nbmlops: {tracker.shipper.pending} record(s) still waiting "
                f"({tracker.shipper.stats.last_error}); they stay in the journal"
            )
        else:
            raise IPythonUsageError(
                f"%track takes on, off, status or sync; got {word!r}. "
                "For a tracked cell write %%track [name] on the first line."
            )

    def _origin(self, line: str, cell: str, count: int | None) -> CellOrigin:
        shell = self.shell
        parent = getattr(shell, "parent_header", None) or {}
        cell_id = (parent.get("metadata") or {}).get("cellId") if isinstance(parent, dict) else None
        if not self._notebook_looked_up:
            self._notebook = notebook_from_environment(shell.user_ns)
            self._notebook_looked_up = True
        raw = f"%%track {line}".rstrip() + "\n" + cell
        notebook, index = locate_cell(raw, self._notebook)
        if notebook and self._notebook is None:
            self._notebook = notebook
        return CellOrigin(
            source_name=notebook,
            source_type="NOTEBOOK",
            cell_id=cell_id,
            cell_index=index,
            execution_count=count,
        )

    def _execute(self, cell: str, code: str | None = None) -> Any:
        """Run the cell's code in the user namespace; exceptions propagate unchanged.

        Not ``shell.run_cell``: that would start a nested execution (a second execution count,
        pre/post-run events firing twice, the history written twice) and would catch the
        exception itself, so the cell would not fail and we could not mark the run FAILED.
        Compiling with the shell's own compiler keeps the user's tracebacks pointing at their
        cell, and the last expression is run in "single" mode so its value displays as usual."""
        __tracebackhide__ = True
        shell = self.shell
        code = code if code is not None else shell.transform_cell(cell)
        filename = shell.compile.cache(code, self._prompt_number(), raw_code=cell)
        tree = ast.parse(code, filename=filename)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Interactive(body=[tree.body.pop()])
        exec(shell.compile(tree, filename, "exec"), shell.user_ns)  # noqa: S102 - the user's own cell
        if last is not None:
            exec(shell.compile(last, filename, "single"), shell.user_ns)  # noqa: S102
        return None

    def _show(self, summary: RunSummary) -> None:
        try:
            handle = display(SummaryView(summary), display_id=True)
        except Exception:
            print(summary_text(summary), file=sys.stderr)
            return
        if summary.dry_run or handle is None:
            return
        if not self._listener_added:
            get_tracker().add_listener(self._on_shipped)
            self._listener_added = True
        self._handles[summary.key] = (handle, summary)
        if summary.shipped:  # shipped before we registered
            self._on_shipped(summary)

    def _on_shipped(self, summary: RunSummary) -> None:
        entry = self._handles.pop(summary.key, None)
        if entry is not None:
            from nbmlops.api.tracking import ui_url

            summary.ui_url = ui_url(get_tracker().settings)
            entry[0].update(SummaryView(summary))


class _CellMagicHelp(MagicHelpFormatter):
    """Usage as ``usage: %%track ...``: IPython's formatter writes a reST ``::`` and the
    line magic's single ``%``, which ``%%track?`` would show as they are."""

    def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: Any = None) -> None:
        super().add_usage(usage, actions, groups, "usage: %%")


def _cell_magic_help(func: Any) -> None:
    """``%%track?`` shows the summary first, then the usage and the options."""
    parser = func.parser
    summary = inspect.cleandoc(parser.description or "")
    parser.formatter_class, parser.description = _CellMagicHelp, None
    func.__doc__ = f"{summary}\n\n{parser.format_help()}"


_cell_magic_help(TrackMagics.track)


def _in_kernel() -> bool:
    """The shell is a Jupyter kernel's (ipykernel), not a terminal or embedded IPython in a
    process that merely imported ipykernel (ipywidgets does)."""
    zmqshell = sys.modules.get("ipykernel.zmqshell")
    if zmqshell is None:
        return False
    from IPython import get_ipython

    return isinstance(get_ipython(), zmqshell.ZMQInteractiveShell)


def _batch_cell(cell_id: str | None) -> bool:
    """A cell run by papermill/nbclient: a kernel, and no front end sent the cell's id."""
    return cell_id is None and _in_kernel()


def _batch_kernel(ipython: Any) -> bool | None:
    """Whether the cell running now comes from a batch runner; None outside any cell (the
    extension loaded at kernel start): the first tracked cell decides then."""
    if not _in_kernel():
        return False
    parent = getattr(ipython, "parent_header", None)
    if not isinstance(parent, dict) or not parent.get("header"):
        return None
    return _batch_cell((parent.get("metadata") or {}).get("cellId"))


_REGISTRY_MAGICS = ("register", "promote", "rollback", "approve", "card")
_OTHER_MAGICS = ("data", "validate", "lineage", "mlops", "pipeline", "sweep", "drift", "replay")
# A cell that asks nbmlops about runs: one of its magics other than %track, or its Python API
# other than track and log_*. Only decides when a batch kernel ships, never what is recorded.
_ASKS_FOR_RUNS = re.compile(
    r"^\s*%(?:{})\b|\bnbmlops\.(?!track\b|log_)[a-z]".format(
        "|".join((*_REGISTRY_MAGICS, *_OTHER_MAGICS))
    ),
    re.M,
)


def _runs_before_reads(info: Any) -> None:
    """In a batch kernel (which leaves its runs to the detached shipper), a cell that reads
    runs, lineage or models gets this kernel's runs in MLflow first."""
    if _ASKS_FOR_RUNS.search(getattr(info, "raw_cell", "") or ""):
        try:
            runs_in_store_now()
        except Exception as err:  # the cell runs anyway; what it reads says what is missing
            print(f"nbmlops: this kernel's runs could not be shipped first: {err}", file=sys.stderr)


def load(ipython: Any) -> None:
    from nbmlops.ipython.data_magics import DataMagics
    from nbmlops.ipython.monitor_magics import MonitorMagics
    from nbmlops.ipython.panel_magics import PanelMagics
    from nbmlops.ipython.pipeline_magics import PipelineMagics
    from nbmlops.ipython.registry_magics import RegistryMagics
    from nbmlops.ipython.replay_magics import ReplayMagics
    from nbmlops.ipython.sweep_magics import SweepMagics
    from nbmlops.ipython.tracked_cells import TrackedCells

    ipython.register_magics(TrackMagics)
    magics = ipython.magics_manager.registry["TrackMagics"]
    magics.cells = TrackedCells(ipython, magics)
    magics.cells.install()
    ipython.register_magics(DataMagics)
    ipython.register_magics(RegistryMagics)
    ipython.register_magics(PanelMagics)
    ipython.register_magics(PipelineMagics)
    ipython.register_magics(SweepMagics)
    ipython.register_magics(MonitorMagics)
    ipython.register_magics(ReplayMagics)
    ipython.events.register("pre_run_cell", _runs_before_reads)
    batch = _batch_kernel(ipython)
    if batch is not None:
        get_tracker().start(batch=batch)  # replays what dead kernels left, in the background


def unload(ipython: Any) -> None:
    from nbmlops.api.tracking import reset_tracker

    try:
        ipython.events.unregister("pre_run_cell", _runs_before_reads)
    except ValueError:
        pass  # loaded before this hook existed, or unloaded twice
    magics = ipython.magics_manager.registry.pop("TrackMagics", None)
    if magics is not None and getattr(magics, "cells", None) is not None:
        magics.cells.uninstall()
    for kind in ("line", "cell"):
        for name in (
            "track",
            "data",
            "validate",
            "lineage",
            "mlops",
            "pipeline",
            "sweep",
            "drift",
            "replay",
            *_REGISTRY_MAGICS,
        ):
            ipython.magics_manager.magics[kind].pop(name, None)
    reset_tracker()
