"""Data quality of live traffic per time window, against the schema inferred from the training
data (the pandera schema ``%validate`` infers, :func:`nbmlops.core.data.schema.infer_schema`):
null shares, values outside the trained range, categories never seen in training, and schema
violations (a missing or unexpected column, text in a numeric column, nulls where the training
data had none).

Each rule is one vectorised mask over the whole column; windows are counted with
``np.bincount`` on the window index, so a window costs nothing extra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbmlops.core.data.column_kinds import check_frame

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from pandera.api.pandas.container import DataFrameSchema

__all__ = ["QualityReport", "quality"]

_COLUMNS = [
    "window",
    "column",
    "rows",
    "nulls",
    "null_share",
    "out_of_range",
    "unseen",
    "unseen_values",
    "not_numbers",
    "violation",
]


@dataclass
class QualityReport:
    """One row per window and column (``table``) and the violations as sentences."""

    table: pd.DataFrame
    violations: list[str] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    unexpected_columns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for r in self.table.to_dict("records"):
            r["window"] = str(r["window"])
            rows.append(
                {
                    k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                    for k, v in r.items()
                }
            )
        return {
            "ok": self.ok,
            "violations": self.violations,
            "missing_columns": self.missing_columns,
            "unexpected_columns": self.unexpected_columns,
            "table": rows,
        }

    def summary(self) -> str:
        if self.ok:
            return f"no quality violations in {self.table['window'].nunique()} window(s)"
        return f"{len(self.violations)} quality violation(s): " + "; ".join(self.violations[:5])

    def _repr_html_(self) -> str:
        return f"<p>{self.summary()}</p>" + self.table.to_html(index=False)


def quality(
    current: pd.DataFrame,
    schema: DataFrameSchema,
    *,
    window: float | None = None,
    time_column: str = "_ts",
    ignore: tuple[str, ...] = ("_ts", "_model", "_version", "_request_id"),
) -> QualityReport:
    """Check ``current`` against ``schema`` per ``window`` seconds of ``time_column`` (epoch
    seconds; one window for the whole frame when ``window`` is None or the column is absent)."""
    import numpy as np
    import pandas as pd

    from nbmlops.core.data.schema import check_schema

    current = check_frame(current, "current")
    schema = check_schema(schema)
    if window is not None and time_column in current.columns and len(current):
        ts = current[time_column].to_numpy(dtype="float64")
        starts = np.floor(ts / window) * window
        labels, win = np.unique(starts, return_inverse=True)
        names = [pd.Timestamp(s, unit="s", tz="UTC") for s in labels]
    else:
        win = np.zeros(len(current), dtype=np.int64)
        names = ["all"]
    nwin = len(names)
    rows_per = np.bincount(win, minlength=nwin)
    violations: list[str] = []
    records: list[dict[str, Any]] = []
    present = {str(c) for c in current.columns}
    missing = [str(n) for n in schema.columns if str(n) not in present]
    unexpected = sorted(present - {str(n) for n in schema.columns} - set(ignore))
    if missing:
        violations.append(f"missing column(s): {', '.join(missing)}")
    if unexpected and schema.strict:
        violations.append(f"column(s) not in the training schema: {', '.join(unexpected)}")

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(win[mask], minlength=nwin)

    for name, col in schema.columns.items():
        name = str(name)
        if name not in present:
            for w in range(nwin):
                records.append(_row(names[w], name, int(rows_per[w]), violation="missing column"))
            continue
        s = current[name]
        null = s.isna().to_numpy()
        nulls = count(null)
        out_of_range = np.zeros(nwin, dtype=np.int64)
        unseen = np.zeros(nwin, dtype=np.int64)
        not_numbers = np.zeros(nwin, dtype=np.int64)
        unseen_values: list[list[str]] = [[] for _ in range(nwin)]
        for check in col.checks:
            st = check.statistics or {}
            if check.name == "in_range":
                values = pd.to_numeric(s, errors="coerce").to_numpy(
                    dtype="float64", na_value=np.nan
                )
                bad_num = np.isnan(values) & ~null
                not_numbers = count(bad_num)
                lo, hi = st.get("min_value", -math.inf), st.get("max_value", math.inf)
                with np.errstate(invalid="ignore"):
                    out_of_range = count((values < lo) | (values > hi))
            elif check.name == "isin":
                allowed = pd.Index([str(v) for v in st.get("allowed_values", [])])
                text = (
                    s.astype(object).where(~null, None).map(lambda v: None if v is None else str(v))
                )
                bad = (~text.isin(allowed) & ~null).to_numpy()
                unseen = count(bad)
                if bad.any():
                    for w in np.unique(win[bad]):
                        vals = text[bad & (win == w)].value_counts().index[:5]
                        unseen_values[int(w)] = [str(v) for v in vals]
        for w in range(nwin):
            problems = []
            if nulls[w] and not col.nullable:
                problems.append(f"{nulls[w]} nulls (none in training)")
            if not_numbers[w]:
                problems.append(f"{not_numbers[w]} values that are not numbers")
            if out_of_range[w]:
                problems.append(f"{out_of_range[w]} values outside the trained range")
            if unseen[w]:
                problems.append(f"{unseen[w]} unseen categories")
            text = "; ".join(problems)
            if text:
                violations.append(f"{name} ({names[w]}): {text}")
            records.append(
                _row(
                    names[w],
                    name,
                    int(rows_per[w]),
                    nulls=int(nulls[w]),
                    out_of_range=int(out_of_range[w]),
                    unseen=int(unseen[w]),
                    unseen_values=unseen_values[w],
                    not_numbers=int(not_numbers[w]),
                    violation=text,
                )
            )
    table = pd.DataFrame(records, columns=_COLUMNS)
    return QualityReport(table, violations, missing, unexpected)


def _row(window: Any, column: str, rows: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "window": window,
        "column": column,
        "rows": rows,
        "nulls": 0,
        "out_of_range": 0,
        "unseen": 0,
        "unseen_values": [],
        "not_numbers": 0,
        "violation": "",
    }
    row.update(values)
    row["null_share"] = row["nulls"] / rows if rows else math.nan
    return row
