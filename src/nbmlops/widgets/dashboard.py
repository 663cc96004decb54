"""The ``%mlops`` dashboard: one Tab holding a panel per registered tab factory.

Other features add their tab with :func:`register_tab` (Experiments, Lineage, Registry and
Monitoring are registered below); there are no placeholder tabs for what does not exist yet. A tab's panel is built the first time the tab is shown, so opening the dashboard
costs only the first tab, and a factory that fails shows its error in its own tab.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
from traitlets import observe

from nbmlops.exceptions import UsageError
from nbmlops.widgets._common import WIDGET_VIEW, batch_kernel, log, message
from nbmlops.widgets.html import TABS_CLASS, error_html, note_html

TabFactory = Callable[[], widgets.Widget]

_tabs: dict[str, TabFactory] = {}
_order: list[str] = []
_lock = threading.Lock()


def register_tab(
    title: str, factory: TabFactory, *, position: int | None = None, replace: bool = False
) -> None:
    """Add a dashboard tab: ``factory()`` returns its widget (called when the tab is first
    shown). ``position`` places it (default: last). Registering a taken title raises unless
    ``replace``."""
    if not isinstance(title, str) or not title.strip():
        raise UsageError(f"A tab title must be a non-empty string, got {title!r}")
    if not callable(factory):
        raise UsageError(f"The factory for tab {title!r} must be callable, got {factory!r}")
    with _lock:
        if title in _tabs and not replace:
            raise UsageError(
                f"A dashboard tab {title!r} is already registered",
                fix="Pass replace=True to replace it, or choose another title.",
            )
        _tabs[title] = factory
        if title in _order:
            _order.remove(title)
        _order.insert(len(_order) if position is None else position, title)


def unregister_tab(title: str) -> None:
    with _lock:
        _tabs.pop(title, None)
        if title in _order:
            _order.remove(title)


def tab_titles() -> list[str]:
    with _lock:
        return list(_order)


class Dashboard(widgets.Tab):
    """Every registered panel in one Tab widget; panels are built on first view."""

    def __init__(self, select: str | None = None, tabs: dict[str, TabFactory] | None = None):
        with _lock:
            factories = dict(tabs) if tabs is not None else {t: _tabs[t] for t in _order}
        if select is not None and select not in factories:
            raise UsageError(
                f"No dashboard tab {select!r}", fix=f"Tabs: {', '.join(factories) or 'none'}."
            )
        self._factories = factories
        self._static_handles: list[Any] = []
        self.panels: dict[str, widgets.Widget] = {}
        boxes = [widgets.VBox(layout=widgets.Layout(width="100%")) for _ in factories]
        index = list(factories).index(select) if select is not None else 0
        super().__init__(
            children=boxes,
            titles=tuple(factories),
            selected_index=index if factories else None,
        )
        self.add_class(TABS_CLASS)
        if factories:
            self.panel(list(factories)[index])

    def panel(self, title: str) -> widgets.Widget:
        """The widget of tab ``title``, building it now if it has not been shown yet."""
        if title not in self._factories:
            raise UsageError(
                f"No dashboard tab {title!r}", fix=f"Tabs: {', '.join(self._factories)}."
            )
        if title not in self.panels:
            box = self.children[list(self._factories).index(title)]
            try:
                built = self._factories[title]()
            except Exception as err:  # one broken tab must not take the dashboard down
                log.debug("dashboard tab %r failed", title, exc_info=True)
                built = widgets.HTML(error_html(f"The {title} tab failed to open: {message(err)}"))
            self.panels[title] = built
            box.children = (built,)
        return self.panels[title]

    @observe("selected_index")
    def _on_select(self, change: dict[str, Any]) -> None:
        index = change["new"]
        if index is not None and 0 <= index < len(self._factories):
            self.panel(list(self._factories)[index])
            self._refresh_static()

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait for the built panels' background work (tests and scripts)."""
        return all(
            p.wait(timeout) for p in self.panels.values() if callable(getattr(p, "wait", None))
        )

    def summary_html(self) -> str:
        parts = [
            '<div class="nbmlops-dashboard"><div><b>nbmlops dashboard</b> · tabs: '
            + ", ".join(self._factories)
            + "</div>"
        ]
        for title, panel in self.panels.items():
            summary = getattr(panel, "summary_html", None)
            if summary is None:
                continue
            try:
                if callable(getattr(panel, "settle", None)):
                    panel.settle()
                parts.append(summary())
            except Exception as err:
                parts.append(error_html(f"{title}: {message(err)}"))
        if not self._factories:
            parts.append(note_html("No tabs are registered."))
        parts.append("</div>")
        return "".join(parts)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = super()._repr_mimebundle_(**kwargs) or {}
        if WIDGET_VIEW not in data:
            return data
        if batch_kernel():  # papermill, nbconvert: the bundle's HTML is what readers see
            try:
                data["text/html"] = self.summary_html()
            except Exception as err:
                data["text/html"] = error_html(message(err))
            return data
        # A live front end renders the widget, never the bundle's HTML; once the notebook is
        # reopened without the widget's state it shows "model not found" instead. So the
        # summary goes in its own output just before the widget, hidden by CSS while the live
        # widget follows it, shown when it does not.
        self._show_static()
        data["text/html"] = note_html("nbmlops dashboard: its summary is in the output above.")
        return data

    def _show_static(self) -> None:
        from IPython.display import display

        try:
            handle = display(
                {"text/html": static_output(self._static_html())}, raw=True, display_id=True
            )
        except Exception:  # never let the summary break the display of the widget
            log.debug("static summary failed", exc_info=True)
            return
        self._static_handles.append(handle)
        self._refresh_static()

    def _static_html(self) -> str:
        try:
            return self.summary_html()
        except Exception as err:
            return error_html(message(err))

    def _refresh_static(self) -> None:
        """Once the built panels have loaded, rewrite the saved summary with what they show."""
        if not self._static_handles:
            return

        def job() -> None:
            self.wait(120)
            html = static_output(self._static_html())
            for handle in list(self._static_handles):
                try:
                    handle.update({"text/html": html}, raw=True)
                except Exception:
                    log.debug("updating the static summary failed", exc_info=True)

        threading.Thread(target=job, name="nbmlops-dashboard-summary", daemon=True).start()

    def close(self) -> None:
        for panel in getattr(self, "panels", {}).values():
            panel.close()
        for box in getattr(self, "children", ()):
            box.close()
        super().close()


# Hides the static summary while the live dashboard follows it in the next output, and hides a
# widget output that did not render (no kernel or state: "model not found") after a summary.
# :has() needs Chromium 105 / Firefox 121; elsewhere both show, which loses nothing. Inline
# styles cannot select a sibling output, hence this one <style> block (kept by JupyterLab in
# trusted outputs; stripped elsewhere, where the summary simply shows).
STATIC_CSS = (
    "<style>"
    ".jp-OutputArea-child:has(.nbmlops-static):has(+ .jp-OutputArea-child .widget-tab)"
    "{display:none}"
    ".jp-OutputArea-child:has(.nbmlops-static) + .jp-OutputArea-child:not(:has(.widget-tab))"
    "{display:none}"
    "</style>"
)


def static_output(summary: str) -> str:
    """The summary as its own output, with the CSS that shows it only when no live widget
    follows."""
    return f'{STATIC_CSS}<div class="nbmlops-static">{summary}</div>'


def _experiments_tab() -> widgets.Widget:
    from nbmlops.widgets.experiments import ExperimentsPanel

    return ExperimentsPanel()


def _lineage_tab() -> widgets.Widget:
    from nbmlops.widgets.lineage import LineagePanel

    return LineagePanel()


def _registry_tab() -> widgets.Widget:
    from nbmlops.widgets.registry import RegistryPanel

    return RegistryPanel()


def _monitoring_tab() -> widgets.Widget:
    from nbmlops.widgets.monitor import MonitorPanel

    # no model named: the version the gateway served last; follows the log while it serves
    return MonitorPanel(follow=True)


register_tab("Experiments", _experiments_tab)
register_tab("Lineage", _lineage_tab)
register_tab("Registry", _registry_tab)
register_tab("Monitoring", _monitoring_tab)
