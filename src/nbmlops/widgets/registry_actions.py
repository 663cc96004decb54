"""The registry panel's action plumbing: where results and refusals show (under the button
that was clicked), the busy state (one action at a time, its button disabled and saying what it
does), the confirm bar, and following changes made elsewhere through a :class:`Poller`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from html import escape
from typing import Any

import ipywidgets as widgets

from nbmlops.exceptions import GateRefused, UsageError
from nbmlops.widgets._common import message
from nbmlops.widgets.html import FONT, OK_EDGE, error_html, note_html
from nbmlops.widgets.live import Poller

MAX_MODELS = 1000


def multiline_error(text: str) -> str:
    """The red box, keeping the lines of a message (every failed gate on its own line)."""
    return f'<div style="white-space:pre-wrap">{error_html(text)}</div>'


class RegistryActions:
    """Mixed into :class:`nbmlops.widgets.registry.RegistryPanel`, which builds the widgets
    and the state these methods use."""

    error: str
    status: str
    pending: str
    busy: str
    model: str
    registry: Any
    poller: Poller
    worker: Any
    comparison: dict[str, Any]
    error_box: widgets.HTML
    status_box: widgets.HTML
    confirm_bar: widgets.Box
    confirm_text: widgets.HTML
    confirm_detail: widgets.HTML
    confirm_button: widgets.Button
    promote_button: widgets.Button
    rollback_button: widgets.Button
    approve_button: widgets.Button
    register_button: widgets.Button
    deploy_button: widgets.Button
    gate_results: list[Any]
    _closed: bool
    _busy_lock: threading.Lock
    _busy_button: widgets.Button | None
    _result_box: widgets.HTML | None
    _box_has_error: bool
    _had_view: bool
    _pending_action: Callable[[], None] | None
    _pending_doing: str
    _saved_label: tuple[str, str]

    def _load_models(self) -> None:  # pragma: no cover - the panel implements it
        raise NotImplementedError

    def show_error(self, err: BaseException | str | None) -> None:
        """A refusal of an action shows under that action's button; other errors (reading
        the store) in the red box at the top."""
        box = self._result_box
        if box is None:
            super().show_error(err)  # type: ignore[misc]
            if self.error:
                self.error_box.value = multiline_error(self.error)
        else:
            text = (err if isinstance(err, str) else message(err)) if err else ""
            super().show_error(None)  # type: ignore[misc] # the box at the top is for errors of reading
            self.error = text
            if text:
                box.value = multiline_error(text)
                self._box_has_error = True
            elif self._box_has_error:
                box.value = ""
                self._box_has_error = False
        if isinstance(err, GateRefused):
            self.gate_results = list(err.results)

    def _say(self, text: str) -> None:
        self.status = text
        box = self._result_box or self.status_box
        self._box_has_error = False
        box.value = (
            f'<div class="nbmlops-result" style="padding:4px 8px;border-left:4px solid '
            f'{OK_EDGE};{FONT}">{escape(text)}</div>'
            if text
            else ""
        )

    # --- busy state: one action at a time, its button disabled and saying what it does -----------
    def _buttons(self) -> list[widgets.Button]:
        return [
            self.promote_button,
            self.rollback_button,
            self.approve_button,
            self.register_button,
            self.deploy_button,
            self.confirm_button,
        ]

    def _act(self, button: widgets.Button, doing: str, job: Callable[[], None]) -> bool:
        """Run ``job`` on the worker with ``button`` showing ``doing…`` and every action
        button disabled until it ends. A click while an action runs does nothing (False)."""
        with self._busy_lock:
            if self.busy:
                return False
            self.busy = doing
        self._busy_button = button
        self._saved_label = (button.description, button.icon)
        for b in self._buttons():
            b.disabled = True
        button.description, button.icon = f"{doing}…", "spinner spin"
        if self._result_box is not None:
            self._result_box.value = note_html(f"{doing}…")
            self._box_has_error = False

        def run() -> None:
            try:
                job()
            finally:
                self._idle()

        self.worker.submit(run)
        return True

    def _idle(self) -> None:
        button = self._busy_button
        if button is not None:
            button.description, button.icon = self._saved_label
        for b in self._buttons():
            b.disabled = False
        self._busy_button = None
        self.busy = ""
        self.poller.poke()

    # --- following changes made elsewhere ---------------------------------------------------------
    def _fingerprint(self) -> tuple[Any, ...]:
        """Model names, and the shown model's versions with their tags and aliases: what any
        register, promote, rollback or approve changes."""
        client = self.registry.client
        names = tuple(
            sorted(m.name for m in client.search_registered_models(max_results=MAX_MODELS))
        )
        name = self.model
        if not name or name not in names:
            return (names,)
        model = client.get_registered_model(name)
        versions = tuple(
            (int(v.version), tuple(sorted((v.tags or {}).items())))
            for v in client.search_model_versions(f"name = '{name}'", max_results=10000)
        )
        aliases = tuple(sorted((model.aliases or {}).items()))
        return names, name, tuple(sorted(versions)), aliases, tuple(sorted(model.tags.items()))

    def _changed_elsewhere(self) -> None:
        if self._closed:
            self.poller.stop()
            return
        if not self.busy:  # the action's own reload follows
            self.worker.submit(self._load_models)

    def _views_changed(self, change: dict[str, Any]) -> None:
        views = change["new"] or 0
        if views:
            self._had_view = True
        elif self._had_view:  # every view of the panel closed (cell re-run or cleared)
            self.poller.stop()

    # --- confirmation -------------------------------------------------------------------------
    def _ask(self, question: str, action: Callable[[], None], doing: str = "Working") -> None:
        """Show the confirm bar; ``action`` runs (in the background) on Confirm."""
        self._pending_action = action
        self._pending_doing = doing
        self.pending = question
        self.confirm_text.value = (
            f'<span style="{FONT};padding-right:8px">⚠ {escape(question)}</span>'
        )
        self.confirm_bar.layout.display = "flex"

    def confirm(self) -> None:
        """Run the action waiting in the confirm bar."""
        action, doing = self._pending_action, self._pending_doing
        if action is None and self.busy:
            return  # a second click on Confirm while the first one's action runs
        self.cancel()
        if action is None:
            raise UsageError("Nothing is waiting for confirmation")
        self._act(self.confirm_button, doing, action)

    def cancel(self) -> None:
        self._pending_action = None
        self._pending_doing = ""
        self.pending = ""
        self.comparison = {}
        self.confirm_text.value = ""
        self.confirm_detail.value = ""
        self.confirm_bar.layout.display = "none"
