"""The runs table's tools in the Experiments panel: the column picker (remembered per
experiment for the kernel's session), grouping by a param or tag, CSV export of what is
shown, and the opened run's note and tags, written back to MLflow."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from nbmlops.api import experiments as core
from nbmlops.api import run_edits
from nbmlops.exceptions import NbmlopsError
from nbmlops.widgets.html import OK_EDGE, error_html, note_html
from nbmlops.widgets.runs_table import default_columns, optional_columns, shown_frame

if TYPE_CHECKING:
    import pandas as pd

    from nbmlops.widgets.experiments import ExperimentsPanel

# Columns chosen per (tracking store, experiment), for the kernel's session: a panel opened
# again on the experiment shows what was chosen last.
REMEMBERED: dict[tuple[str, str], tuple[str, ...]] = {}


def with_tags(runs: pd.DataFrame, tags: dict[str, dict[str, str]]) -> pd.DataFrame:
    """``runs`` with a ``tags.KEY`` column per user tag (``tags.note``: the run's note)."""
    keys = sorted({k for t in tags.values() for k in t}, key=lambda k: (k != "note", k))
    runs = runs.drop(columns=[c for c in runs.columns if c.startswith("tags.")])
    if not keys:
        return runs
    ids = list(runs["run_id"])
    extra = {f"tags.{k}": [tags.get(r, {}).get(k) for r in ids] for k in keys}
    return runs.assign(**extra)


def ok_html(text: str) -> str:
    return (
        f'<div role="status" style="border-left:4px solid {OK_EDGE};padding:2px 8px">'
        f"{escape(text)}</div>"
    )


class RunsTools:
    """The widgets and actions of the table's tools; the state is the panel's traits
    (``columns``, ``group_by``, ``collapsed``)."""

    def __init__(self, panel: ExperimentsPanel):
        self.panel = panel
        w = widgets
        self.columns_menu = w.SelectMultiple(
            description="Columns",
            options=[],
            rows=5,
            tooltip="params, metrics and tags shown in the table",
            layout=w.Layout(width="300px"),
        )
        self.columns_reset = w.Button(
            description="Default columns", tooltip="every param and metric, no tags"
        )
        self.group_menu = w.Dropdown(
            description="Group by", options=[("no grouping", "")], layout=w.Layout(width="260px")
        )
        self.export_path = w.Text(
            placeholder="exports/runs.csv",
            description="CSV file",
            tooltip="a path inside the project",
            layout=w.Layout(width="300px"),
        )
        self.export_button = w.Button(description="Export CSV", icon="download")
        self.export_result = w.HTML("")
        self.box = w.HBox(
            [
                w.VBox([self.columns_menu, self.columns_reset]),
                w.VBox(
                    [self.group_menu, w.HBox([self.export_path, self.export_button])],
                    layout=w.Layout(flex="1 1 auto"),
                ),
                self.export_result,
            ],
            layout=w.Layout(flex_flow="row wrap", align_items="flex-start"),
        )
        self.note_box = w.Textarea(
            description="Note", placeholder="what this run tried", layout=w.Layout(width="520px")
        )
        self.tags_box = w.Text(
            description="Tags",
            placeholder="team=vision, stage=tuned",
            layout=w.Layout(width="520px"),
        )
        self.save_button = w.Button(
            description="Save note and tags", icon="save", layout=w.Layout(width="180px")
        )
        self.edit_result = w.HTML("")
        self.editor = w.VBox(
            [self.note_box, self.tags_box, self.save_button, self.edit_result],
            layout=w.Layout(display="none"),
        )
        self._tags_before: dict[str, str] = {}
        self._note_before = ""
        self._editing = ""

        self.columns_menu.observe(self._columns_picked, "value")
        self.columns_reset.on_click(lambda _b: self.choose_columns(None))
        self.group_menu.observe(lambda c: panel._set("group_by", c["new"] or ""), "value")
        self.export_button.on_click(lambda _b: self._export_clicked())
        self.save_button.on_click(lambda _b: self._save_clicked())

    # --- columns and groups -----------------------------------------------------------------
    def key(self) -> tuple[str, str]:
        return (self.panel.settings.resolved_tracking_uri, self.panel.experiment or "")

    def update_menus(self) -> None:
        """After the runs were read: the menus list their columns; the columns chosen for
        this experiment earlier in the session come back."""
        panel, runs = self.panel, self.panel.runs
        remembered = REMEMBERED.get(self.key())
        groupable = [
            (f"param {core.short(c)}" if c.startswith("params.") else c[5:] + " (tag)", c)
            for c in runs.columns
            if c.startswith(("params.", "tags.")) and c != "tags.note"
        ]
        with panel._quietly():
            panel.columns = remembered  # type: ignore[assignment]  # None: the defaults
            self.columns_menu.options = [
                (c if c.startswith("tags.") else core.short(c), c) for c in optional_columns(runs)
            ]
            self.columns_menu.value = self.shown_columns()
            self.group_menu.options = [("no grouping", ""), *groupable]
            values = [v for _l, v in self.group_menu.options]
            if panel.group_by not in values:
                panel.group_by = ""
            self.group_menu.value = panel.group_by

    def shown_columns(self) -> tuple[str, ...]:
        runs, chosen = self.panel.runs, self.panel.columns
        available = optional_columns(runs)
        return tuple(
            c for c in (default_columns(runs) if chosen is None else chosen) if c in available
        )

    def choose_columns(self, columns: tuple[str, ...] | None) -> None:
        """Show these optional columns (None: the defaults); remembered for the experiment."""
        self.panel._set("columns", None if columns is None else tuple(columns))
        with self.panel._quietly():
            self.columns_menu.value = self.shown_columns()

    def _columns_picked(self, change: dict[str, Any]) -> None:
        if not self.panel._is_quiet:
            self.choose_columns(tuple(change["new"]))

    def sync_group_menu(self) -> None:
        with self.panel._quietly():
            if self.panel.group_by in [v for _l, v in self.group_menu.options]:
                self.group_menu.value = self.panel.group_by

    # --- CSV export -------------------------------------------------------------------------
    def shown(self) -> pd.DataFrame:
        """Every row the filter keeps (all pages), in the table's order and columns."""
        return shown_frame(self.panel.view, self.panel.columns)

    def export(self, path: str = "") -> Path:
        """Write what the table shows to ``path`` under the project (default
        ``exports/EXPERIMENT-runs.csv``); returns the file's absolute path."""
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.panel.experiment or "runs").strip("-.")
        target = path.strip() or f"exports/{name or 'runs'}-runs.csv"
        return run_edits.export_csv(self.panel.settings, self.shown(), target)

    def _export_clicked(self) -> None:
        self.export_button.disabled = True
        self.export_result.value = note_html("Writing the CSV file…")
        rows = len(self.panel.view)

        def job() -> None:
            try:
                written = self.export(self.export_path.value)
                self.export_result.value = ok_html(f"Wrote {rows:,} run(s) to {written}")
            except NbmlopsError as err:
                self.export_result.value = error_html(f"Not exported: {err}")
            finally:
                self.export_button.disabled = False

        self.panel.worker.submit(job)

    # --- note and tags of the opened run ----------------------------------------------------
    def open_run(self, run_id: str) -> None:
        """Show the editor for ``run_id`` ('' hides it), filled from MLflow."""
        self._editing = run_id
        self.edit_result.value = ""
        if not run_id:
            self.editor.layout.display = "none"
            return
        tags = run_edits.run_tags(self.panel.settings, [run_id]).get(run_id, {})
        if self._editing != run_id:
            return
        self._tags_before = {k: v for k, v in tags.items() if k != "note"}
        self._note_before = self.note_box.value = tags.get("note", "")
        self.tags_box.value = ", ".join(f"{k}={v}" for k, v in self._tags_before.items())
        self.editor.layout.display = "flex"

    def save(self) -> dict[str, str]:
        """Write the editor's note and tags to the opened run (a tag removed from the text is
        deleted); raises the refusal, which says why."""
        run_id = self._editing
        if not run_id:
            raise NbmlopsError("No run is open", fix="Click a run in the table first.")
        tags = run_edits.parse_tags(self.tags_box.value)
        removed = [k for k in self._tags_before if k not in tags]
        # an unchanged note is not written again (nor checked: it may be the cell's code,
        # recorded already redacted)
        note = self.note_box.value if self.note_box.value != self._note_before else None
        saved = run_edits.edit_run(
            self.panel.settings, run_id, note=note, tags=tags, remove=removed
        )
        self._note_before = saved.get("note", "")
        self._tags_before = {k: v for k, v in saved.items() if k != "note"}
        self.panel.tags_changed(run_id, saved)
        return saved

    def _save_clicked(self) -> None:
        self.save_button.disabled = True
        self.edit_result.value = note_html("Saving to MLflow…")

        def job() -> None:
            try:
                saved = self.save()
                n = len([k for k in saved if k != "note"])
                self.edit_result.value = ok_html(
                    f"Saved to MLflow: {'the note and ' if saved.get('note') else ''}{n} tag(s)"
                )
            except NbmlopsError as err:
                self.edit_result.value = error_html(f"Not saved: {err}")
            finally:
                self.save_button.disabled = False

        self.panel.worker.submit(job)

    def close(self) -> None:
        for w in (self.box, self.editor):
            for child in getattr(w, "children", ()):
                for sub in getattr(child, "children", ()):
                    sub.close()
                child.close()
            w.close()
