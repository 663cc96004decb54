"""``%drift``: parse the line, call nbmlops.monitor, display the table and the histograms."""

from __future__ import annotations

from typing import Any

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import Image, display

from nbmlops.exceptions import UsageError
from nbmlops.ipython.args import MagicArgumentParser, reports_errors

LOG = "log"  # the word that names the prediction log as the current data


def _drift_parser() -> MagicArgumentParser:
    p = MagicArgumentParser(
        prog="%drift",
        description="Drift of current data from a reference, per feature and for the dataset.",
    )
    p.add_argument(
        "reference",
        nargs="?",
        help="a DataFrame variable or a data version NAME@k (default: the training data of "
        "--model's champion)",
    )
    p.add_argument(
        "current",
        nargs="?",
        help=f"a DataFrame variable, NAME@k, or '{LOG}': the prediction log (the default)",
    )
    p.add_argument("--model", help="NAME or NAME@alias: the served model (default alias champion)")
    p.add_argument("--last", help="window of the prediction log: 15m, 1h (default), 7d")
    p.add_argument("--since", help="window start (ISO time, UTC)")
    p.add_argument("--until", help="window end (ISO time, UTC)")
    p.add_argument("--rows", type=int, help="the newest N rows of the prediction log")
    p.add_argument("--profiles", action="store_true", help="read the window from its profiles")
    p.add_argument(
        "--test",
        default="auto",
        help="auto (as Evidently picks), ks, wasserstein, chi2, jensenshannon, psi",
    )
    p.add_argument("--correction", default="bh", help="bh (default), bonferroni or none")
    p.add_argument("--multivariate", action="store_true", help="add the PCA reconstruction test")
    p.add_argument("--html", help="also write a self-contained HTML report to this path")
    p.add_argument("--no-plot", action="store_true", help="the table only")
    return p


@magics_class
class MonitorMagics(Magics):
    @line_magic
    @reports_errors
    def drift(self, line: str) -> Any:
        """``%drift [REF] [CUR] [--model NAME@alias] [--last 1h | --since T | --rows N]``:
        the per-feature drift table and overlaid histograms of the drifted features."""
        import shlex

        import nbmlops.api.monitor as monitor

        args = _drift_parser().parse_args(shlex.split(line))
        ns = self.shell.user_ns if self.shell is not None else {}
        report = monitor.drift(
            _value(args.reference, ns, "reference"),
            None if args.current in (None, LOG) else _value(args.current, ns, "current"),
            model=args.model,
            last=args.last,
            since=args.since,
            until=args.until,
            rows=args.rows,
            profiles=args.profiles,
            test=args.test,
            correction=args.correction,
            multivariate=args.multivariate,
            html=args.html,
        )
        display(report)
        if not args.no_plot:
            png = report.png()  # an image displays in any front end, with or without inline
            if png is not None:
                display(Image(data=png, format="png"))
        return report


def _value(word: str | None, ns: dict[str, Any], side: str) -> Any:
    """A variable of the notebook, or the word itself (a data version NAME@k)."""
    if word is None:
        return None
    if word.isidentifier():
        if word not in ns:
            raise UsageError(
                f"no variable {word!r} for the {side} data",
                fix="pass a DataFrame variable of this notebook, or a data version NAME@k",
            )
        return ns[word]
    return word
