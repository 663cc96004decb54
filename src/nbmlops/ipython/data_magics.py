"""``%data``, ``%validate`` and ``%lineage``: parse the line, call nbmlops.data / the lineage
graph, display the result."""

from __future__ import annotations

import shlex
from typing import Any

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import display

from nbmlops.exceptions import NbmlopsError
from nbmlops.ipython.args import MagicArgumentParser


def _data_parser() -> MagicArgumentParser:
    p = MagicArgumentParser(prog="%data", description="Versioned data in the project's data store.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=MagicArgumentParser)
    c = sub.add_parser("commit", help="store a version of a variable or a local file/folder")
    c.add_argument("target", help="a variable (DataFrame, Series, ndarray) or a file/folder path")
    c.add_argument("--name", "-n", help="dataset name (default: the variable or file name)")
    c.add_argument("-m", "--message", default="", help="what this version is")
    sub.add_parser("ls", help="every dataset and its latest version")
    lg = sub.add_parser("log", help="all versions of a dataset")
    lg.add_argument("name")
    sh = sub.add_parser("show", help="one version: digest, schema, profile")
    sh.add_argument("ref", help="NAME@k or NAME (latest)")
    df = sub.add_parser("diff", help="what changed between two versions")
    df.add_argument("a")
    df.add_argument("b")
    df.add_argument("--key", help="comma-separated key columns for row matching")
    co = sub.add_parser("checkout", help="a version back: `%%data checkout NAME@k [as var]`")
    co.add_argument("ref")
    co.add_argument("rest", nargs="*", help="`as VAR`, or a destination path for files")
    return p


def _versions_frame(versions: list[Any]) -> Any:
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "version": v.ref,
                "kind": v.kind,
                "shape": "x".join(map(str, v.shape)),
                "digest": v.digest[:12],
                "bytes": v.nbytes,
                "author": v.author,
                "created": pd.Timestamp(v.created, unit="s", tz="UTC").strftime(
                    "%Y-%m-%d %H:%M:%S"
                ),
                "message": v.message,
            }
            for v in versions
        ]
    )


@magics_class
class DataMagics(Magics):
    @line_magic
    def data(self, line: str) -> Any:
        """Versioned data: ``%data commit|ls|log|show|diff|checkout`` (``%data -h`` for help)."""
        from nbmlops.api import data as api

        args = _data_parser().parse_args(shlex.split(line))
        ns = self.shell.user_ns
        try:
            if args.command == "commit":
                target = args.target
                if target in ns:
                    result = api.commit(ns[target], args.name or target, args.message)
                else:
                    result = api.commit(target, args.name, args.message)
                v = result.version
                state = "new version" if result.created else "unchanged: same content as"
                print(
                    f"nbmlops data: {state} {v.ref} ({v.kind} {'x'.join(map(str, v.shape))}, "
                    f"#{v.digest[:12]}, {result.bytes_written} bytes written)"
                )
                return None
            if args.command == "ls":
                return _versions_frame(api.ls())
            if args.command == "log":
                return _versions_frame(api.log(args.name))
            if args.command == "show":
                v = api.show(args.ref)
                display(_versions_frame([v]))
                if v.profile:
                    import pandas as pd

                    return pd.DataFrame(v.profile.get("columns", {})).T
                return None
            if args.command == "diff":
                key = [k.strip() for k in args.key.split(",")] if args.key else None
                result = api.diff(args.a, args.b, key=key)
                print(result.summary())
                return None
            if args.command == "checkout":
                return self._checkout(api, args.ref, args.rest)
        except NbmlopsError as err:
            raise IPythonUsageError(str(err)) from None
        return None

    def _checkout(self, api: Any, ref: str, rest: list[str]) -> Any:
        version = api.show(ref)
        if version.kind in ("file", "folder"):
            path = api.checkout(ref, rest[0] if rest else None)
            print(f"nbmlops data: {version.ref} written to {path}")
            return None
        if rest and (len(rest) != 2 or rest[0] != "as" or not rest[1].isidentifier()):
            raise IPythonUsageError("write `%data checkout NAME@k as VARIABLE`")
        var = rest[1] if rest else version.name.replace("-", "_").replace(".", "_")
        self.shell.user_ns[var] = api.load(version.ref)
        print(f"nbmlops data: {version.ref} loaded into `{var}`")
        return None

    @line_magic
    def validate(self, line: str) -> Any:
        """``%validate DF --against NAME@k [--schema FILE] [--save-schema FILE] [--strict]
        [--plots failed|all|none]``"""
        from nbmlops.api import data as api

        p = MagicArgumentParser(
            prog="%validate", description="Check a frame against a reference version."
        )
        p.add_argument("frame", help="a DataFrame variable")
        p.add_argument("--against", help="reference data version NAME@k")
        p.add_argument("--schema", help="a saved YAML schema to use instead of inferring one")
        p.add_argument("--save-schema", help="write the schema used to this YAML file")
        p.add_argument("--strict", action="store_true", help="raise when validation fails")
        p.add_argument(
            "--plots",
            choices=["failed", "all", "none"],
            default="failed",
            help="distribution plots for the failing and drifted columns (default), all, none",
        )
        p.add_argument("--no-plot", action="store_true", help="same as --plots none")
        args = p.parse_args(shlex.split(line))
        if args.frame not in self.shell.user_ns:
            raise IPythonUsageError(f"no variable {args.frame!r} in this notebook")
        df = self.shell.user_ns[args.frame]
        try:
            report = api.validate(
                df, args.against, schema=args.schema, save_schema=args.save_schema, strict=False
            )
        except NbmlopsError as err:
            raise IPythonUsageError(str(err)) from None
        # one output: the verdict line, then the compact table (problems first); the full
        # text summary stays in the plain-text form for consoles and logs
        display({"text/html": report._repr_html_(), "text/plain": report.summary()}, raw=True)
        plots = "none" if args.no_plot else args.plots
        if plots != "none" and args.against:
            reference = api.load(args.against)
            if plots == "all":
                display(report.plot(df, reference, max_columns=len(report.columns) or 1))
            else:
                failing = report.problem_columns()
                if failing:
                    display(report.plot(df, reference, max_columns=len(failing), columns=failing))
        if args.strict and not report.passed:
            api.raise_if_failed(report)
        return None

    @line_magic
    def lineage(self, line: str) -> Any:
        """``%lineage X``: upstream and downstream of a variable, NAME@k, run id or model."""
        what = line.strip()
        if not what:
            raise IPythonUsageError(
                "usage: %lineage X   (a variable, NAME@k, run id, runs:/ID/NAME)"
            )
        from nbmlops.api.lineage import lineage_graph, resolve
        from nbmlops.api.tracking import get_tracker

        tracker = get_tracker()
        tracker.flush(30)  # what this kernel tracked so far is part of the picture
        graph = lineage_graph(tracker.settings)
        try:
            view = graph.view(resolve(graph, what, self.shell.user_ns))
        except NbmlopsError as err:
            raise IPythonUsageError(str(err)) from None
        print(graph.to_text(view))
        display(graph.draw(view))
        return None
