"""The result of :func:`~nbmlops.core.data.validate.validate_frame`: a summary for a person, a
per-column table, a JSON-friendly dict and reference-vs-current plots."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from nbmlops.core.data.column_kinds import check_frame, column_kind, float_values, to_python
from nbmlops.core.data.drift import ColumnDrift

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["MAX_ERRORS_IN_DICT", "ValidationReport"]

# to_dict keeps at most this many failure cases (the count of all of them is kept too).
MAX_ERRORS_IN_DICT = 100


@dataclass
class ValidationReport:
    """What :func:`validate_frame` found.

    ``passed`` is true when there is no schema error and no drifted column. ``schema_errors``
    has one row per failure case from pandera's lazy validation, with columns ``column``,
    ``check``, ``failure_case``, ``index`` (a missing or unexpected column is named in
    ``column``). ``outliers`` counts, per numeric column, values beyond Tukey's fences
    (``Q1 - 1.5*IQR``, ``Q3 + 1.5*IQR``) of the reference (of the frame itself when no reference
    was given); it is informational and does not affect ``passed``. ``drift`` has one entry per
    compared column. ``nulls`` and ``dtypes`` describe the current frame per column and
    ``columns`` lists every column involved (the schema's, then unexpected ones).
    """

    passed: bool
    schema_errors: pd.DataFrame
    outliers: dict[str, int]
    drift: list[ColumnDrift]
    rows: int
    nulls: dict[str, int] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)

    @property
    def drifted_columns(self) -> list[str]:
        return [d.column for d in self.drift if d.drifted]

    def _error_columns(self) -> list[str]:
        if self.schema_errors.empty:
            return []
        cols = self.schema_errors["column"].dropna().astype(str)
        return list(dict.fromkeys(cols))

    def summary(self) -> str:
        """A few lines for a person: verdict, schema errors, drift, outliers."""
        lines = [
            f"Validation {'passed' if self.passed else 'FAILED'}: {self.rows} rows, "
            f"{len(self.columns)} columns."
        ]
        if self.schema_errors.empty:
            lines.append("Schema: ok.")
        else:
            errs = self.schema_errors
            per_col = []
            for col in self._error_columns():
                checks = errs.loc[errs["column"].astype(str) == col, "check"].astype(str)
                per_col.append(f"{col} ({', '.join(dict.fromkeys(checks))})")
            n_other = int(errs["column"].isna().sum())
            if n_other:
                per_col.append(f"frame-level checks ({n_other})")
            lines.append(f"Schema: {len(errs)} failure cases in " + "; ".join(per_col) + ".")
        if self.drift:
            drifted = [d for d in self.drift if d.drifted]
            if drifted:
                parts = [
                    f"{d.column} ({d.test} p={d.p_value:.2g}, psi={d.psi:.2f})" for d in drifted
                ]
                lines.append(
                    f"Drift: {len(drifted)} of {len(self.drift)} compared columns: "
                    + ", ".join(parts)
                    + "."
                )
            else:
                lines.append(f"Drift: none in {len(self.drift)} compared columns.")
        flagged = {c: n for c, n in self.outliers.items() if n}
        if flagged:
            lines.append(
                "Outliers (beyond IQR fences): "
                + ", ".join(f"{c} {n}" for c, n in flagged.items())
                + "."
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def problem_columns(self) -> list[str]:
        """Columns with a schema error, then drifted ones: what ``%validate`` plots."""
        from nbmlops.core.data.report_html import problem_columns

        return problem_columns(self)

    def _repr_html_(self) -> str:
        from nbmlops.core.data.report_html import report_html

        return report_html(self)

    def to_table(self) -> pd.DataFrame:
        """One row per column: presence, dtype, schema result, nulls, outliers, drift."""
        import pandas as pd

        errs = self.schema_errors
        drift = {d.column: d for d in self.drift}
        rows = []
        for col in self.columns:
            mine = errs[errs["column"].astype(str) == col] if not errs.empty else errs
            checks = mine["check"].astype(str) if not mine.empty else pd.Series([], dtype=object)
            present = col in self.dtypes
            d = drift.get(col)
            rows.append(
                {
                    "column": col,
                    "present": present,
                    "expected": not bool((checks == "column_in_schema").any()),
                    "dtype": self.dtypes.get(col),
                    "dtype_ok": present and not bool(checks.str.startswith("dtype(").any()),
                    "nulls": self.nulls.get(col),
                    "schema_errors": len(mine),
                    "checks_failed": ", ".join(dict.fromkeys(checks)),
                    "outliers": self.outliers.get(col),
                    "test": d.test if d else None,
                    "statistic": d.statistic if d else math.nan,
                    "p_value": d.p_value if d else math.nan,
                    "psi": d.psi if d else math.nan,
                    "drifted": d.drifted if d else False,
                }
            )
        return pd.DataFrame(rows).astype({"nulls": "Int64", "outliers": "Int64"})

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for logging to a run (at most MAX_ERRORS_IN_DICT failure cases)."""
        errs = self.schema_errors
        records = [
            {k: _jsonable(v) for k, v in rec.items()}
            for rec in errs.head(MAX_ERRORS_IN_DICT).to_dict(orient="records")
        ]
        return {
            "passed": bool(self.passed),
            "rows": int(self.rows),
            "columns": list(self.columns),
            "schema_error_count": len(errs),
            "schema_error_columns": self._error_columns(),
            "schema_errors": records,
            "schema_errors_truncated": len(errs) > MAX_ERRORS_IN_DICT,
            "outliers": {k: int(v) for k, v in self.outliers.items()},
            "nulls": {k: int(v) for k, v in self.nulls.items()},
            "dtypes": dict(self.dtypes),
            "drift": [{k: _jsonable(v) for k, v in asdict(d).items()} for d in self.drift],
            "drifted_columns": self.drifted_columns,
        }

    def plot(
        self,
        current: pd.DataFrame,
        reference: pd.DataFrame,
        max_columns: int = 12,
        columns: list[str] | None = None,
    ) -> Figure:
        """Reference vs current, one axis per column: overlaid histograms for numeric columns,
        paired bars of proportions for categorical ones. Drifted columns come first, titled in
        red; ``columns`` (when given) limits the plot to those columns, in that order. Uses ``matplotlib.figure.Figure`` directly (no pyplot state), so it works headless;
        save it with ``fig.savefig(path)``.
        """
        current = check_frame(current, "current")
        reference = check_frame(reference, "reference")
        from matplotlib.figure import Figure

        shown: list[tuple[str, Literal["numeric", "categorical"], ColumnDrift | None]] = []
        if self.drift:
            ordered = sorted(self.drift, key=lambda d: not d.drifted)
            shown = [(d.column, d.kind, d) for d in ordered]
        else:
            for col in reference.columns:
                kind = column_kind(reference[col], 50)
                if kind is not None and col in current.columns:
                    shown.append((str(col), kind, None))
        # Report names are str(label); map them back to the frames' own labels.
        cur_labels = {str(c): c for c in current.columns}
        ref_labels = {str(c): c for c in reference.columns}
        shown = [t for t in shown if t[0] in cur_labels and t[0] in ref_labels]
        if columns is not None:
            rank = {str(c): i for i, c in enumerate(columns)}
            shown = sorted((t for t in shown if t[0] in rank), key=lambda t: rank[t[0]])
        shown = shown[: max(0, max_columns)]

        n = len(shown)
        ncols = min(3, max(1, n))
        nrows = max(1, math.ceil(n / ncols))
        fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
        if n == 0:
            ax = fig.add_subplot(1, 1, 1)
            ax.text(0.5, 0.5, "no comparable columns", ha="center", va="center")
            ax.set_axis_off()
            return fig
        for i, (col, kind, d) in enumerate(shown):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            ref_s, cur_s = reference[ref_labels[col]], current[cur_labels[col]]
            if kind == "numeric":
                _plot_numeric(ax, ref_s, cur_s)
            else:
                _plot_categorical(ax, ref_s, cur_s)
            title = col
            if d is not None:
                title += f"  ({d.test} p={d.p_value:.2g}, psi={d.psi:.2f})"
            ax.set_title(
                title,
                fontsize=9,
                color="red" if d is not None and d.drifted else "black",
                fontweight="bold" if d is not None and d.drifted else "normal",
            )
            if i == 0:
                ax.legend(fontsize=8)
        return fig


def _plot_numeric(ax: Any, ref: pd.Series, cur: pd.Series) -> None:
    import numpy as np

    r, c = float_values(ref), float_values(cur)
    both = np.concatenate([r, c])
    if len(both) == 0:
        return
    lo, hi = float(both.min()), float(both.max())
    if np.all(both == np.round(both)) and hi - lo <= 60:
        bins = np.arange(lo - 0.5, hi + 1.5)  # one bar per integer
    else:
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 31)
    if len(r):
        ax.hist(r, bins=bins, density=True, alpha=0.5, label="reference", color="tab:blue")
    if len(c):
        ax.hist(c, bins=bins, density=True, alpha=0.5, label="current", color="tab:orange")


def _plot_categorical(ax: Any, ref: pd.Series, cur: pd.Series, top: int = 15) -> None:
    import numpy as np

    rp = ref.dropna().astype(str).value_counts(normalize=True)
    cp = cur.dropna().astype(str).value_counts(normalize=True)
    cats = list(dict.fromkeys([*rp.index, *cp.index]))
    cats.sort(key=lambda k: -max(rp.get(k, 0.0), cp.get(k, 0.0)))
    cats = cats[:top]
    x = np.arange(len(cats))
    ax.bar(x - 0.2, [rp.get(k, 0.0) for k in cats], 0.4, label="reference", color="tab:blue")
    ax.bar(x + 0.2, [cp.get(k, 0.0) for k in cats], 0.4, label="current", color="tab:orange")
    ax.set_xticks(x, [k if len(k) <= 12 else k[:11] + "…" for k in cats], fontsize=7)
    if len(cats) > 4:
        ax.tick_params(axis="x", labelrotation=45)


def _jsonable(value: Any) -> Any:
    value = to_python(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)
