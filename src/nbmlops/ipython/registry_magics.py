"""``%register``, ``%promote``, ``%rollback``, ``%approve`` and ``%card``: parse the line, call
:mod:`nbmlops.api.registry`, display the result. A refusal (role,
gate, lock, store) is shown as one message in the cell and changes nothing."""

from __future__ import annotations

import shlex
from typing import Any

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import HTML, display

from nbmlops.exceptions import NbmlopsError
from nbmlops.ipython.args import MagicArgumentParser


def _registry() -> Any:
    from nbmlops.api.registry import model_registry
    from nbmlops.api.tracking import get_tracker

    return model_registry(get_tracker().settings)


def _gates_frame(results: list[Any]) -> Any:
    import pandas as pd

    return pd.DataFrame(
        [{"gate": r.gate, "passed": r.passed, "reason": r.reason} for r in results],
        columns=["gate", "passed", "reason"],
    )


@magics_class
class RegistryMagics(Magics):
    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NbmlopsError as err:
            raise IPythonUsageError(str(err)) from None

    @line_magic
    def register(self, line: str) -> Any:
        """``%register MODEL NAME [--holdout NAME@k --target COL] [--intended-use TEXT]
        [--limitations TEXT] [--description TEXT]``: register a model as a new version."""
        p = MagicArgumentParser(
            prog="%register", description="Register a model version with its card."
        )
        p.add_argument(
            "model",
            help="a notebook variable bound by a %%%%track cell, runs:/RUN_ID/NAME, or m-...",
        )
        p.add_argument("name", help="registered model name")
        p.add_argument("--holdout", help="data version NAME@k for the permutation importance")
        p.add_argument("--target", help="target column of the holdout")
        p.add_argument("--intended-use", help="what the model is for (model card)")
        p.add_argument("--limitations", help="where it must not be used (model card)")
        p.add_argument("--description", help="a line describing this version")
        args = p.parse_args(shlex.split(line))
        if args.model.isidentifier() and args.model in self.shell.user_ns:
            from nbmlops.api.tracking import get_tracker

            tracker = get_tracker()
            if not tracker.flush(tracker.settings.ship_wait_seconds):  # lineage needs the run
                raise IPythonUsageError(
                    f"the run that fitted {args.model!r} is not in MLflow yet "
                    f"({tracker.shipper.stats.last_error or 'still shipping'}); try again"
                )
        rv = self._call(
            _registry().register,
            args.model,
            args.name,
            holdout=args.holdout,
            target=args.target,
            intended_use=args.intended_use,
            limitations=args.limitations,
            description=args.description,
            namespace=self.shell.user_ns,  # the training data, for the card's importance
        )
        data = rv.data_summary
        card = "complete" if rv.card.complete else f"incomplete ({', '.join(rv.card.missing)})"
        print(
            f"nbmlops registry: {rv.name} v{rv.version} registered (run {rv.run_id[:12]}, "
            f"data {data}, scan {rv.scan.status}, card {card})"
        )
        for gap in rv.data_gaps:
            print(f"  data: {gap}")
        for line_ in rv.scan.summary():
            print(f"  scan: {line_}")
        if not rv.card.complete:
            flags = " ".join(f'--{f.replace("_", "-")} "..."' for f in rv.card.missing)
            print(f"  fill in the card: %card {rv.name} {rv.version} {flags}")
        return None

    @line_magic
    def promote(self, line: str) -> Any:
        """``%promote NAME VERSION [--alias champion] [--override REASON]``"""
        p = MagicArgumentParser(
            prog="%promote", description="Move an alias to a version through its gates."
        )
        p.add_argument("name")
        p.add_argument("version")
        p.add_argument("--alias", default="champion", help="alias to move (default champion)")
        p.add_argument("--override", help="admins: promote despite failed gates, for this reason")
        args = p.parse_args(shlex.split(line))
        result = self._call(
            _registry().promote, args.name, args.version, args.alias, override=args.override
        )
        print(f"nbmlops registry: {result.summary()}")
        if result.gates:
            display(_gates_frame(result.gates))
        return None

    @line_magic
    def rollback(self, line: str) -> Any:
        """``%rollback NAME [--alias champion]``: the alias back to its previous holder."""
        p = MagicArgumentParser(
            prog="%rollback", description="Move an alias back to its previous holder."
        )
        p.add_argument("name")
        p.add_argument("--alias", default="champion")
        args = p.parse_args(shlex.split(line))
        result = self._call(_registry().rollback, args.name, args.alias)
        print(f"nbmlops registry: {result.summary()}")
        return None

    @line_magic
    def approve(self, line: str) -> Any:
        """``%approve NAME VERSION [--comment TEXT]``"""
        p = MagicArgumentParser(prog="%approve", description="Approve a version (approver role).")
        p.add_argument("name")
        p.add_argument("version")
        p.add_argument("--comment", "-m", default="")
        args = p.parse_args(shlex.split(line))
        a = self._call(_registry().approve, args.name, args.version, args.comment)
        state = "approved" if a.new else "already approved"
        print(f"nbmlops registry: {a.name} v{a.version} {state} by {a.user}")
        return None

    @line_magic
    def card(self, line: str) -> Any:
        """``%card NAME VERSION [--intended-use TEXT] [--limitations TEXT] [--description
        TEXT]``: show a version's model card, after editing the given fields."""
        p = MagicArgumentParser(prog="%card", description="Show or edit a version's model card.")
        p.add_argument("name")
        p.add_argument("version")
        p.add_argument("--intended-use")
        p.add_argument("--limitations")
        p.add_argument("--description")
        p.add_argument("--no-show", action="store_true", help="do not display the card")
        args = p.parse_args(shlex.split(line))
        reg = _registry()
        edits = {
            "intended_use": args.intended_use,
            "limitations": args.limitations,
            "description": args.description,
        }
        if any(v is not None for v in edits.values()):
            card = self._call(reg.card, args.name, args.version, **edits)
            state = "complete" if card.complete else f"incomplete ({', '.join(card.missing)})"
            print(f"nbmlops registry: card of {card.name} v{card.version} updated ({state})")
        if not args.no_show:
            display(HTML(self._call(reg.card_html, args.name, args.version)))
        return None
