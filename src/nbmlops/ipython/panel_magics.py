"""``%mlops``: the dashboard of panels (Experiments, Lineage, and tabs registered later)."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from nbmlops.exceptions import NbmlopsError


@magics_class
class PanelMagics(Magics):
    @magic_arguments()
    @argument("tab", nargs="?", help="Open on this tab (default: the first, Experiments).")
    @line_magic
    def mlops(self, line: str) -> Any:
        """Show the nbmlops dashboard: runs of the experiment, lineage, and more tabs as
        features register them. Needs a widget front end (JupyterLab, Notebook 7, VS Code);
        elsewhere it shows a static summary."""
        try:
            args = parse_argstring(self.mlops, line)
        except IPythonUsageError as err:
            raise IPythonUsageError(f"{err}\nusage: %mlops [TAB]") from None
        from nbmlops.panels import dashboard

        try:
            return dashboard(args.tab)
        except NbmlopsError as err:
            raise IPythonUsageError(str(err)) from None
