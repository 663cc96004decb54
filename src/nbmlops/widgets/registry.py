"""The registry panel: registered models, their versions and aliases, and the actions that move
them (register, promote, roll back, approve, deploy).

State: ``model`` (whose versions and aliases show), ``version`` (what Promote, Approve act on),
``alias`` (what Promote, Rollback, Deploy act on, and whose history shows), ``canary_percent``
(Deploy's share for @challenger). Every decision (roles, gates, history, audit) is
:mod:`nbmlops.api.registry`'s; a refusal shows in the error box with
its reason and changes nothing. Actions that change production (moving a protected alias such
as ``champion``, a rollback, a deploy) wait in a confirm bar until Confirm is clicked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import ipywidgets as widgets
from traitlets import Int, Unicode, observe

from nbmlops.api.registry import (
    AliasEvent,
    VersionInfo,
    alias_role,
    as_version,
    check_alias,
    check_role,
    model_registry,
)
from nbmlops.api.serving import CANARY_ALIAS, kserve_canary
from nbmlops.api.tracking import get_tracker
from nbmlops.config import Settings
from nbmlops.exceptions import GateRefused, UsageError
from nbmlops.widgets._common import PanelMixin, Worker, log
from nbmlops.widgets.html import FONT, TABLE, TD, TH, error_html, note_html

MAX_MODELS = 1000


# --- HTML ------------------------------------------------------------------------------------
def _when(ts: float | None) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _table(head: list[str], rows: list[list[str]], cls: str) -> str:
    """Cells are HTML already (escaped by the caller)."""
    th = "".join(f'<th style="{TH}">{escape(h)}</th>' for h in head)
    body = "".join(
        "<tr>" + "".join(f'<td style="{TD}">{c}</td>' for c in row) + "</tr>" for row in rows
    )
    return (
        '<div style="overflow-x:auto;max-width:100%">'
        f'<table class="{cls}" style="{TABLE}"><thead><tr>{th}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def versions_html(versions: list[VersionInfo], selected: int = 0) -> str:
    if not versions:
        return note_html("No versions registered yet.")
    rows = []
    for v in reversed(versions):  # newest first
        scan = escape(v.scan)
        if v.scan != "clean":
            colour = "#c62828" if v.scan == "flagged" else "#8a6d00"
            scan = f'<span style="color:{colour}">{scan}</span>'
        mark = "▶ " if v.version == selected else ""
        rows.append(
            [
                f"<b>{mark}v{v.version}</b>",
                escape(v.run_id or ""),
                escape(_when(v.created)),
                escape(", ".join(f"@{a}" for a in v.aliases)),
                scan,
                "✓" if v.card_complete else '<span style="color:#c62828">✗</span>',
                escape(", ".join(v.approvals)),
            ]
        )
    head = ["version", "run", "created", "aliases", "scan", "card complete", "approvals"]
    return _table(head, rows, "nbmlops-versions")


def aliases_html(aliases: dict[str, int]) -> str:
    if not aliases:
        return note_html("No alias is set.")
    rows = [[f"<b>@{escape(a)}</b>", f"v{v}"] for a, v in aliases.items()]
    return _table(["alias", "held by"], rows, "nbmlops-aliases")


def history_html(alias: str, events: list[AliasEvent]) -> str:
    if not events:
        return note_html(f"@{alias} has no recorded history.")
    rows = []
    for e in reversed(events):  # newest first
        before = "nobody" if e.previous is None else f"v{e.previous}"
        after = "nobody" if e.version is None else f"v{e.version}"
        rows.append(
            [
                escape(_when(e.ts)),
                escape(e.action),
                escape(f"{before} → {after}" if e.action != "external" else after),
                escape(e.user),
                escape(e.override or ""),
            ]
        )
    title = (
        f'<div style="{FONT};font-weight:600;padding:6px 0 2px">History of @{escape(alias)}</div>'
    )
    return title + _table(["when", "action", "move", "by", "override"], rows, "nbmlops-history")


def _multiline_error(text: str) -> str:
    """The red box, keeping the lines of a message (every failed gate on its own line)."""
    return f'<div style="white-space:pre-wrap">{error_html(text)}</div>'


# --- the panel -----------------------------------------------------------------------------------
class RegistryPanel(PanelMixin, widgets.VBox):
    """Registered models: versions, aliases and their history; register, promote, roll back,
    approve and deploy through :func:`nbmlops.api.registry.model_registry`."""

    model = Unicode("", help="Registered model shown ('' for none)")
    version = Int(0, help="Version Promote and Approve act on (0: none)")
    alias = Unicode("champion", help="Alias Promote, Rollback and Deploy act on")
    canary_percent = Int(0, min=0, max=50, help="Deploy: % of traffic to @challenger (0: none)")
    error = Unicode("", help="The last error, shown in the red box; '' when all is well")
    status = Unicode("", help="What the last action did")
    pending = Unicode("", help="The action waiting in the confirm bar ('' for none)")

    def __init__(
        self,
        name: str | None = None,
        *,
        settings: Settings | None = None,
        autoload: bool = True,
    ):
        self.settings = settings or get_tracker().settings
        self.registry = model_registry(self.settings)
        self.models: list[str] = []
        self.versions: list[VersionInfo] = []
        self.aliases: dict[str, int] = {}
        self.history: list[AliasEvent] = []
        self.roles: list[str] = []
        self.gate_results: list[Any] = []
        self.deployed: Any = None  # the last ExportResult
        self._pending_action: Callable[[], None] | None = None
        self._syncing = threading.local()
        self._loaded = threading.Event()
        self._closed = False
        self.worker = Worker(self.show_error)
        self._build_widgets()
        super().__init__(
            children=[
                self.header,
                self.error_box,
                self.confirm_bar,
                self.status_box,
                self.versions_table,
                self.actions,
                self.register_row,
                self.deploy_row,
                self.deploy_box,
                self.alias_area,
            ],
            layout=widgets.Layout(width="100%"),
        )
        if name:
            with self._quietly():
                self.model = name
        if autoload:
            self.reload()
        else:
            self._loaded.set()

    # --- widgets ------------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        w = widgets
        auto = w.Layout(width="auto")
        self.model_menu = w.Dropdown(
            description="Model", options=[], layout=w.Layout(width="320px")
        )
        self.refresh_button = w.Button(description="Refresh", icon="refresh", layout=auto)
        self.roles_note = w.HTML("")
        self.header = w.HBox(
            [self.model_menu, self.refresh_button, self.roles_note],
            layout=w.Layout(flex_flow="row wrap", align_items="center"),
        )
        self.error_box = w.HTML("", layout=w.Layout(display="none"))
        self.confirm_text = w.HTML("")
        self.confirm_button = w.Button(
            description="Confirm", button_style="danger", icon="check", layout=auto
        )
        self.cancel_button = w.Button(description="Cancel", icon="times", layout=auto)
        self.confirm_bar = w.HBox(
            [self.confirm_text, self.confirm_button, self.cancel_button],
            layout=w.Layout(
                display="none",
                align_items="center",
                border="1px solid #e0b252",
                padding="4px 8px",
                margin="4px 0",
            ),
        )
        self.status_box = w.HTML("")
        self.versions_table = w.HTML(note_html("Loading…"))

        self.version_menu = w.Dropdown(
            description="Version", options=[], layout=w.Layout(width="170px")
        )
        self.alias_box = w.Combobox(
            value=self.alias,
            options=["champion", CANARY_ALIAS],
            description="Alias",
            ensure_option=False,
            continuous_update=False,
            layout=w.Layout(width="220px"),
        )
        self.promote_button = w.Button(
            description="Promote", icon="arrow-up", button_style="primary", layout=auto
        )
        self.rollback_button = w.Button(description="Rollback", icon="undo", layout=auto)
        self.approve_button = w.Button(description="Approve", icon="thumbs-up", layout=auto)
        self.actions = w.HBox(
            [
                self.version_menu,
                self.alias_box,
                self.promote_button,
                self.rollback_button,
                self.approve_button,
            ],
            layout=w.Layout(flex_flow="row wrap"),
        )

        self.source_box = w.Text(
            placeholder="runs:/RUN_ID/NAME, model id m-… or variable",
            layout=w.Layout(width="320px"),
        )
        self.name_box = w.Text(
            placeholder="model name (default: the selected one)", layout=w.Layout(width="260px")
        )
        self.register_button = w.Button(description="Register", icon="plus", layout=auto)
        self.register_row = w.HBox(
            [self.source_box, self.name_box, self.register_button],
            layout=w.Layout(flex_flow="row wrap"),
        )

        self.out_box = w.Text(
            placeholder="folder (default: deploy/<model>)", layout=w.Layout(width="260px")
        )
        self.canary_slider = w.IntSlider(
            value=0,
            min=0,
            max=50,
            step=1,
            description=f"@{CANARY_ALIAS} %",
            continuous_update=False,
            layout=w.Layout(width="300px"),
        )
        self.overwrite_box = w.Checkbox(value=False, description="overwrite", indent=False)
        self.deploy_button = w.Button(description="Deploy", icon="rocket", layout=auto)
        self.deploy_row = w.HBox(
            [self.out_box, self.canary_slider, self.overwrite_box, self.deploy_button],
            layout=w.Layout(flex_flow="row wrap", align_items="center"),
        )
        self.deploy_box = w.HTML("")

        self.aliases_table = w.HTML("")
        self.history_table = w.HTML("")
        self.alias_area = w.HBox(
            [
                w.VBox([self.aliases_table]),
                w.VBox([self.history_table], layout=w.Layout(padding="0 0 0 16px")),
            ]
        )

        widgets.link((self.canary_slider, "value"), (self, "canary_percent"))
        widgets.link((self.alias_box, "value"), (self, "alias"))
        self.model_menu.observe(self._on_model_menu, "value")
        self.version_menu.observe(self._on_version_menu, "value")
        self.refresh_button.on_click(lambda _b: self.reload())
        self.promote_button.on_click(lambda _b: self._guard(self.promote))
        self.rollback_button.on_click(lambda _b: self._guard(self.rollback))
        self.approve_button.on_click(lambda _b: self._guard(self.approve))
        self.register_button.on_click(lambda _b: self._guard(self.register))
        self.deploy_button.on_click(lambda _b: self._guard(self.deploy))
        self.confirm_button.on_click(lambda _b: self._guard(self.confirm))
        self.cancel_button.on_click(lambda _b: self._guard(self.cancel))

    # --- plumbing -----------------------------------------------------------------------------
    class _Quiet:
        def __init__(self, local: threading.local):
            self.local = local

        def __enter__(self) -> None:
            self.before = getattr(self.local, "on", False)
            self.local.on = True

        def __exit__(self, *exc: Any) -> None:
            self.local.on = self.before

    def _quietly(self) -> RegistryPanel._Quiet:
        return self._Quiet(self._syncing)

    @property
    def _is_quiet(self) -> bool:
        return getattr(self._syncing, "on", False)

    def _guard(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            log.debug("panel callback failed", exc_info=True)
            self.show_error(err)
            return None

    def show_error(self, err: BaseException | str | None) -> None:
        super().show_error(err)
        if self.error:
            self.error_box.value = _multiline_error(self.error)
        if isinstance(err, GateRefused):
            self.gate_results = list(err.results)

    def _say(self, text: str) -> None:
        self.status = text
        self.status_box.value = (
            f'<div style="color:#1b5e20;padding:4px 0;{FONT}">{escape(text)}</div>' if text else ""
        )

    # --- loading ------------------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read the model names, then the selected model (in the background)."""
        self.worker.submit(self._load_models)

    def _load_models(self) -> None:
        try:
            found = self.registry.client.search_registered_models(max_results=MAX_MODELS)
            self.models = sorted(m.name for m in found)
            wanted = self.model or (self.models[0] if self.models else "")
            with self._quietly():
                self.model_menu.options = self.models
                self.model_menu.value = wanted if wanted in self.models else None
                self.model = wanted
            if not wanted:
                self.versions, self.aliases, self.history = [], {}, []
                self.versions_table.value = note_html(
                    "No registered models yet: register one below (runs:/RUN_ID/NAME or a "
                    "tracked model variable) or with %register VARIABLE NAME."
                )
                self._render()
                return
            self._load_model()
        finally:
            self._loaded.set()

    def _load_model(self) -> None:
        """The selected model's versions, aliases, the alias's history and the user's roles."""
        name = self.model
        if not name:
            return
        reg = self.registry
        self.versions = reg.versions(name)
        self.aliases = reg.aliases(name)
        self.roles = reg.roles(name)
        if self._closed or name != self.model:
            return
        known = [v.version for v in self.versions]
        with self._quietly():
            self.version_menu.options = [(f"v{v}", v) for v in reversed(known)]
            if self.version not in known:
                self.version = known[-1] if known else 0
            self.version_menu.value = self.version or None
            self.alias_box.options = sorted({"champion", CANARY_ALIAS, *self.aliases})
        self._load_history()
        self.show_error(None)
        self._render()

    def _load_history(self) -> None:
        alias = self.alias.strip()
        try:
            alias = check_alias(alias)
        except UsageError:
            self.history = []
            self.history_table.value = note_html("Type an alias to see its history.")
            return
        self.history = self.registry.history(self.model, alias) if self.model else []
        self.history_table.value = history_html(alias, self.history)

    def _render(self) -> None:
        self.versions_table.value = (
            versions_html(self.versions, self.version) if self.model else note_html("")
        )
        self.aliases_table.value = aliases_html(self.aliases) if self.model else ""
        user = escape(self.registry.user)
        roles = escape(", ".join(self.roles) or "none")
        self.roles_note.value = (
            f'<span style="{FONT};color:#555;padding-left:8px">you: {user} ({roles})</span>'
            if self.model
            else ""
        )

    def _on_model_menu(self, change: dict[str, Any]) -> None:
        if not self._is_quiet and change["new"]:
            self.model = change["new"]

    def _on_version_menu(self, change: dict[str, Any]) -> None:
        if not self._is_quiet and change["new"]:
            self.version = int(change["new"])

    @observe("model")
    def _model_changed(self, change: dict[str, Any]) -> None:
        if self._is_quiet:
            return
        self.cancel()
        with self._quietly():
            if change["new"] in self.models:
                self.model_menu.value = change["new"]
            self.version = 0
        self.worker.submit(self._load_model)

    @observe("version")
    def _version_changed(self, change: dict[str, Any]) -> None:
        if self._is_quiet:
            return
        with self._quietly():
            if change["new"] in [v for _l, v in self.version_menu.options]:
                self.version_menu.value = change["new"]
        self.versions_table.value = versions_html(self.versions, self.version)

    @observe("alias")
    def _alias_changed(self, change: dict[str, Any]) -> None:
        if not self._is_quiet and self.model:
            self.worker.submit(self._load_history)

    # --- confirmation -------------------------------------------------------------------------
    def _ask(self, question: str, action: Callable[[], None]) -> None:
        """Show the confirm bar; ``action`` runs (in the background) on Confirm."""
        self._pending_action = action
        self.pending = question
        self.confirm_text.value = (
            f'<span style="{FONT};padding-right:8px">⚠ {escape(question)}</span>'
        )
        self.confirm_bar.layout.display = "flex"

    def confirm(self) -> None:
        """Run the action waiting in the confirm bar."""
        action = self._pending_action
        self.cancel()
        if action is None:
            raise UsageError("Nothing is waiting for confirmation")
        self.worker.submit(action)

    def cancel(self) -> None:
        self._pending_action = None
        self.pending = ""
        self.confirm_text.value = ""
        self.confirm_bar.layout.display = "none"

    def _start(self) -> str:
        """Checks every action makes first; returns the model name."""
        self.cancel()
        self.show_error(None)
        self._say("")
        if not self.model:
            raise UsageError("Pick a model first", fix="Choose one in the Model menu.")
        return self.model

    def _check_role(self, name: str, alias: str, action: str) -> bool:
        """Raise RoleDenied now (before any confirmation) if the user may not move ``alias``;
        return whether the alias is protected (moving it changes production)."""
        needed = alias_role(self.settings.registry, name, alias)
        check_role(self.settings.registry, self.registry.user, name, needed, action)
        return needed != "developer"

    def _run(self, action: Callable[[], str]) -> Callable[[], None]:
        """An action for the worker: do it, say what it did, re-read the model."""

        def job() -> None:
            self.gate_results = []
            text = action()
            self._say(text)
            self._load_model()

        return job

    # --- actions ------------------------------------------------------------------------------
    def promote(self, version: int | str | None = None, alias: str | None = None) -> None:
        """Move ``alias`` (default: the alias box) to ``version`` (default: the selected one);
        a protected alias (champion) waits for Confirm."""
        name = self._start()
        version = as_version(version if version is not None else self.version or 0)
        alias = check_alias((alias or self.alias).strip())
        protected = self._check_role(name, alias, f"move @{alias} (promote version {version})")
        job = self._run(lambda: self.registry.promote(name, version, alias).summary())
        if protected:
            holder = self.aliases.get(alias)
            now = f"held by v{holder}" if holder is not None else "unset"
            self._ask(f"Move {name}@{alias} ({now}) to v{version}? This changes production.", job)
        else:
            self.worker.submit(job)

    def rollback(self, alias: str | None = None) -> None:
        """Move ``alias`` back to its previous holder, after Confirm."""
        name = self._start()
        alias = check_alias((alias or self.alias).strip())
        self._check_role(name, alias, f"roll back @{alias}")
        holder = self.aliases.get(alias)
        if holder is None:
            raise UsageError(f"@{alias} of {name} has no holder: nothing to roll back")
        job = self._run(lambda: self.registry.rollback(name, alias).summary())
        self._ask(
            f"Roll back {name}@{alias} from v{holder} to the version that held it before?", job
        )

    def approve(self, version: int | str | None = None, comment: str = "") -> None:
        """Record the user's approval of ``version`` (default: the selected one)."""
        name = self._start()
        version = as_version(version if version is not None else self.version or 0)

        def action() -> str:
            done = self.registry.approve(name, version, comment)
            return (
                f"{done.user} approved {name} v{version}"
                if done.new
                else f"{done.user} had already approved {name} v{version}"
            )

        self.worker.submit(self._run(action))

    def register(self, source: str | None = None, name: str | None = None) -> None:
        """Register ``source`` (default: the source box) as a new version of ``name`` (default:
        the name box, else the selected model)."""
        self.cancel()
        self.show_error(None)
        self._say("")
        source = (source if source is not None else self.source_box.value).strip()
        name = (name if name is not None else self.name_box.value).strip() or self.model
        if not source:
            raise UsageError("Type what to register", fix=self.source_box.placeholder + ".")
        if not name:
            raise UsageError("Name the model", fix="Type a model name next to the source.")

        def job() -> None:
            done = self.registry.register(source, name)
            self._say(f"Registered {done.uri} (scan: {done.scan.status})")
            with self._quietly():
                self.model = name
                self.version = done.version
            self._load_models()

        self.worker.submit(job)

    def deploy(self, out: str | Path | None = None) -> None:
        """Export a KServe manifest for ``MODEL@alias`` to ``out`` (default: the folder box,
        else ``deploy/<model>`` in the project), with ``canary_percent`` % of the traffic to
        @challenger when it is above 0; after Confirm."""
        name = self._start()
        alias = check_alias(self.alias.strip())
        if alias not in self.aliases:
            raise UsageError(
                f"@{alias} of {name} has no holder: nothing to deploy",
                fix="Promote a version to it first, or type an alias that is set.",
            )
        percent = int(self.canary_percent)
        canary = kserve_canary(name, alias, self.aliases, percent)
        folder = Path(out if out is not None else (self.out_box.value.strip() or "deploy/" + name))
        if not folder.is_absolute():
            folder = self.settings.project_dir / folder
        force = bool(self.overwrite_box.value)

        def action() -> str:
            from nbmlops.api.serving import export_deployment

            result = export_deployment(
                self.settings, f"{name}@{alias}", "kserve", folder, canary=canary, force=force
            )
            self.deployed = result
            self.deploy_box.value = _export_html(result)
            return f"Exported {name}@{alias} to {folder} ({len(result.files)} files)"

        what = f"{name}@{alias} (v{self.aliases[alias]})"
        if canary:
            what += f" with {percent}% to @{CANARY_ALIAS} (v{self.aliases[CANARY_ALIAS]})"
        self._ask(f"Export a KServe deployment of {what} to {folder}?", self._run(action))

    # --- static fallback and lifecycle ----------------------------------------------------------
    def summary_html(self) -> str:
        parts = ['<div class="nbmlops-panel nbmlops-registry"><div><b>nbmlops registry</b>']
        if self.model:
            parts.append(f" · {escape(self.model)}")
        parts.append("</div>")
        if self.error:
            parts.append(_multiline_error(self.error))
        if self.status:
            parts.append(note_html(self.status))
        if self.model:
            parts.append(versions_html(self.versions))
            parts.append(aliases_html(self.aliases))
            if self.history:
                parts.append(history_html(self.alias, self.history))
        elif not self.error:
            parts.append(note_html("No registered models yet."))
        parts.append("</div>")
        return "".join(parts)

    def close(self) -> None:
        self._closed = True
        self.worker.close()
        for child in self.children:
            _close_tree(child)
        super().close()


def _export_html(result: Any) -> str:
    files = "".join(f"<li><code>{escape(str(f))}</code></li>" for f in result.files)
    notes = "".join(f"<li>{escape(n)}</li>" for n in result.notes)
    return (
        f'<div style="{FONT}"><b>Written ({escape(result.target)}):</b><ul>{files}</ul>'
        + (f"<b>Notes:</b><ul>{notes}</ul>" if notes else "")
        + "</div>"
    )


def _close_tree(widget: widgets.Widget) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()
