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
from html import escape
from pathlib import Path
from typing import Any

import ipywidgets as widgets
from traitlets import Bool, Int, Unicode, observe

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
from nbmlops.exceptions import AlreadyRegistered, UsageError
from nbmlops.widgets._common import PanelMixin, Worker, log, message, style_widget
from nbmlops.widgets.html import FONT, MUTED, note_html
from nbmlops.widgets.live import Poller
from nbmlops.widgets.registry_actions import MAX_MODELS, RegistryActions, multiline_error
from nbmlops.widgets.registry_html import (
    aliases_html,
    comparison_html,
    history_html,
    versions_html,
)


# --- the panel -----------------------------------------------------------------------------------
class RegistryPanel(RegistryActions, PanelMixin, widgets.VBox):
    """Registered models: versions, aliases and their history; register, promote, roll back,
    approve and deploy through :func:`nbmlops.api.registry.model_registry`."""

    model = Unicode("", help="Registered model shown ('' for none)")
    version = Int(0, help="Version Promote and Approve act on (0: none)")
    alias = Unicode("champion", help="Alias Promote, Rollback and Deploy act on")
    canary_percent = Int(0, min=0, max=50, help="Deploy: % of traffic to @challenger (0: none)")
    error = Unicode("", help="The last error, shown in the red box; '' when all is well")
    status = Unicode("", help="What the last action did")
    pending = Unicode("", help="The action waiting in the confirm bar ('' for none)")
    busy = Unicode("", help="The action running now ('' for none); its button is disabled")
    live = Bool(True, help="Follow changes made elsewhere (CLI, other kernels) by polling")

    def __init__(
        self,
        name: str | None = None,
        *,
        settings: Settings | None = None,
        autoload: bool = True,
        live: bool = True,
    ):
        self.settings = settings or get_tracker().settings
        self.registry = model_registry(self.settings)
        self.models: list[str] = []
        self.versions: list[VersionInfo] = []
        self.aliases: dict[str, int] = {}
        self.history: list[AliasEvent] = []
        self.roles: list[str] = []
        self.gate_results: list[Any] = []
        self.comparison: dict[str, Any] = {}  # what the confirm bar compares before a promote
        self._busy_lock = threading.Lock()
        self._busy_button: widgets.Button | None = None
        self._result_box: widgets.HTML | None = None
        self._had_view = False
        self._box_has_error = False
        self._pending_doing = ""
        self._saved_label: tuple[str, str] = ("", "")
        self.deployed: Any = None  # the last ExportResult
        self._pending_action: Callable[[], None] | None = None
        self._syncing = threading.local()
        self._loaded = threading.Event()
        self._closed = False
        self.worker = Worker(self.show_error)
        self._build_widgets()
        super().__init__(
            children=[
                style_widget(),
                self.header,
                self.error_box,
                self.versions_table,
                self.actions,
                self.confirm_bar,
                self.status_box,
                self.register_row,
                self.register_result,
                self.deploy_row,
                self.deploy_result,
                self.deploy_box,
                self.alias_area,
            ],
            layout=widgets.Layout(width="100%"),
        )
        if name:
            with self._quietly():
                self.model = name
        self.poller = Poller(self._fingerprint, self._changed_elsewhere, name="nbmlops-registry")
        self._view_count = 0  # counted by the front end: polling stops once every view is gone
        if autoload:
            self.reload()
            if live:
                self.worker.submit(lambda: self.poller.start(baseline=True))
        else:
            self._loaded.set()
        self.live = live

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
        self.confirm_detail = w.HTML("")
        self.confirm_button = w.Button(
            description="Confirm", button_style="danger", icon="check", layout=auto
        )
        self.cancel_button = w.Button(description="Cancel", icon="times", layout=auto)
        self.confirm_bar = w.VBox(
            [
                self.confirm_text,
                self.confirm_detail,
                w.HBox([self.confirm_button, self.cancel_button]),
            ],
            layout=w.Layout(
                display="none",
                border="1px solid var(--jp-warn-color1,#f57c00)",
                padding="4px 8px",
                margin="4px 0",
            ),
        )
        self.status_box = w.HTML("")
        self.versions_table = w.HTML(note_html("Loading…"))

        self.version_menu = w.Dropdown(
            description="Version",
            options=[],
            style={"description_width": "initial"},
            layout=w.Layout(width="auto", min_width="130px"),
        )
        self.alias_box = w.Combobox(
            value=self.alias,
            options=["champion", CANARY_ALIAS],
            description="Alias",
            ensure_option=False,
            continuous_update=False,
            style={"description_width": "initial"},
            layout=w.Layout(width="260px"),
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
        self.register_result = w.HTML("")
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
            style={"description_width": "initial"},
            layout=w.Layout(width="340px"),
        )
        self.overwrite_box = w.Checkbox(value=False, description="overwrite", indent=False)
        self.deploy_button = w.Button(description="Deploy", icon="rocket", layout=auto)
        self.deploy_row = w.HBox(
            [self.out_box, self.canary_slider, self.overwrite_box, self.deploy_button],
            layout=w.Layout(flex_flow="row wrap", align_items="center"),
        )
        self.deploy_box = w.HTML("")
        self.deploy_result = w.HTML("")

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
        self.observe(self._views_changed, "_view_count")
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

    # --- loading ------------------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read the model names, then the selected model (in the background)."""
        self._result_box = None  # errors of reading go to the box at the top
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
            f'<span style="{FONT};{MUTED};padding-left:8px">you: {user} ({roles})</span>'
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

    def _start(self, box: widgets.HTML | None = None) -> str:
        """Checks every action makes first; returns the model name."""
        self._result_box = box or self.status_box
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
        if self.busy:
            return
        name = self._start()
        version = as_version(version if version is not None else self.version or 0)
        alias = check_alias((alias or self.alias).strip())
        protected = self._check_role(name, alias, f"move @{alias} (promote version {version})")
        job = self._run(lambda: self.registry.promote(name, version, alias).summary())
        if not protected:
            self._act(self.promote_button, "Promoting", job)
            return
        holder = self.aliases.get(alias)
        now = f"held by v{holder}" if holder is not None else "unset"
        self._ask(
            f"Move {name}@{alias} ({now}) to v{version}? This changes production.",
            job,
            "Promoting",
        )
        self._show_comparison(name, version, alias, holder, None)
        self.worker.submit(lambda: self._check_gates(name, version, alias, holder))

    def _show_comparison(
        self, name: str, version: int, alias: str, holder: int | None, gates: Any, note: str = ""
    ) -> None:
        by_number = {v.version: v for v in self.versions}
        candidate = by_number.get(version)
        current = by_number.get(holder) if holder is not None and holder != version else None
        self.comparison = {
            "model": name,
            "alias": alias,
            "candidate": candidate,
            "holder": current,
            "gates": gates,
        }
        self.confirm_detail.value = comparison_html(candidate, current, alias, gates, note)

    def _check_gates(self, name: str, version: int, alias: str, holder: int | None) -> None:
        """The gates' verdict now (a dry run: nothing changes), into the confirm bar."""
        note = ""
        try:
            gates: list[Any] = list(self.registry.check_gates(name, version, alias))
        except Exception as err:
            gates, note = [], f"The gates could not be checked: {message(err)}"
        still = self.comparison.get("model") == name and self.comparison.get("alias") == alias
        candidate = self.comparison.get("candidate")
        if still and self.pending and (candidate is None or candidate.version == version):
            self._show_comparison(name, version, alias, holder, gates, note)

    def rollback(self, alias: str | None = None) -> None:
        """Move ``alias`` back to its previous holder, after Confirm."""
        if self.busy:
            return
        name = self._start()
        alias = check_alias((alias or self.alias).strip())
        self._check_role(name, alias, f"roll back @{alias}")
        holder = self.aliases.get(alias)
        if holder is None:
            raise UsageError(f"@{alias} of {name} has no holder: nothing to roll back")
        job = self._run(lambda: self.registry.rollback(name, alias).summary())
        self._ask(
            f"Roll back {name}@{alias} from v{holder} to the version that held it before?",
            job,
            "Rolling back",
        )

    def approve(self, version: int | str | None = None, comment: str = "") -> None:
        """Record the user's approval of ``version`` (default: the selected one)."""
        if self.busy:
            return
        name = self._start()
        version = as_version(version if version is not None else self.version or 0)

        def action() -> str:
            done = self.registry.approve(name, version, comment)
            return (
                f"{done.user} approved {name} v{version}"
                if done.new
                else f"{done.user} had already approved {name} v{version}"
            )

        self._act(self.approve_button, "Approving", self._run(action))

    def register(self, source: str | None = None, name: str | None = None) -> None:
        """Register ``source`` (default: the source box) as a new version of ``name`` (default:
        the name box, else the selected model)."""
        if self.busy:
            return  # a second click while the first registration runs does nothing
        self._result_box = self.register_result
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
            try:
                done = self.registry.register(source, name)
                version, said = done.version, f"Registered {done.uri} (scan: {done.scan.status})"
            except AlreadyRegistered as err:  # idempotent: show the version it already is
                version, said = err.version, str(err)
            self._say(said)
            with self._quietly():
                self.model = name
                self.version = version
            self._load_models()

        self._act(self.register_button, "Registering", job)

    def deploy(self, out: str | Path | None = None) -> None:
        """Export a KServe manifest for ``MODEL@alias`` to ``out`` (default: the folder box,
        else ``deploy/<model>`` in the project), with ``canary_percent`` % of the traffic to
        @challenger when it is above 0; after Confirm."""
        if self.busy:
            return
        name = self._start(self.deploy_result)
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
        self._ask(
            f"Export a KServe deployment of {what} to {folder}?", self._run(action), "Exporting"
        )

    # --- static fallback and lifecycle ----------------------------------------------------------
    def summary_html(self) -> str:
        parts = ['<div class="nbmlops-panel nbmlops-registry"><div><b>nbmlops registry</b>']
        if self.model:
            parts.append(f" · {escape(self.model)}")
        parts.append("</div>")
        if self.error:
            parts.append(multiline_error(self.error))
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
        self.poller.stop()
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
