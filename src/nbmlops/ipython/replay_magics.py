"""``%replay RUN_ID``: write and show the notebook that made a ``%%track`` run, the cells it
depends on from this project's execution history (:mod:`nbmlops.api.replay`)."""

from __future__ import annotations

import shlex
from typing import Any

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import Markdown, display

from nbmlops.ipython.args import MagicArgumentParser, reports_errors


@magics_class
class ReplayMagics(Magics):
    @line_magic
    @reports_errors
    def replay(self, line: str) -> Any:
        """``%replay RUN_ID``: write the cells run RUN_ID depends on, in the order they ran, to
        <home>/reproduce/RUN_ID/replay.ipynb and show them; what cannot be replayed is named."""
        from nbmlops.api.replay import export_notebook
        from nbmlops.api.tracking import get_tracker

        p = MagicArgumentParser(
            prog="%replay", description="The notebook that made a tracked run, without running it."
        )
        p.add_argument("run_id", help="MLflow run id of a %%%%track run, or its first characters")
        args = p.parse_args(shlex.split(line))
        tracker = get_tracker()
        tracker.flush(tracker.settings.ship_wait_seconds)  # the run must be in the lineage
        done = export_notebook(args.run_id, settings=tracker.settings)
        piece = done.slice
        parts = [
            f"**Replay of run `{done.run_id}`**: {len(piece.cells)} cell(s) in the order they "
            f"ran, {piece.skipped} left out; written to `{done.path}`"
        ]
        for source, count in piece.sources():
            label = f"[{count}]" if count is not None else "setup"
            parts.append(f"{label}\n```python\n{source}\n```")
        for b in done.blockers:
            parts.append(f"**cannot replay** `{b.what}`: {b.reason}")
        display(Markdown("\n\n".join(parts)))
        return None
