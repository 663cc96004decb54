"""What changed between two versions of a table: schema, rows and the shape of the numbers.

With key columns rows are matched by key, so an edited row counts as *changed* (and each
column says how many of its values changed, and the first changed rows show their old and new
values). Without keys, two frames with the same unique index (the same labels, or an index of
the same name such as ``id``) are matched by index the same way. Otherwise rows are matched
by a hash of their values in the shared columns: an edited row then shows up as one removed
plus one added row, and ``rows_changed`` stays 0 (the diff's notes say so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from nbmlops.exceptions import UsageError

__all__ = ["SHOWN_ROWS", "DataDiff", "diff_versions"]

SHOWN_ROWS = 10  # changed rows shown with their old and new values


@dataclass
class DataDiff:
    """The result of :func:`diff_versions`.

    ``schema_changes`` is ``{"added": [...], "removed": [...], "dtype_changed": {col: [old,
    new]}}``; ``changed_columns`` counts changed values per shared column (keyed diffs only);
    ``changed_rows`` holds the first :data:`SHOWN_ROWS` changed rows as ``{"key": ...,
    "values": {col: [old, new]}}``; ``profile_shifts`` maps each shared numeric column to ``{"mean"|"std"|"null_rate":
    {"old", "new", "rel_change"}}``.
    """

    old_rows: int
    new_rows: int
    key_columns: list[str] | None
    schema_changes: dict[str, Any]
    rows_added: int
    rows_removed: int
    rows_changed: int
    changed_columns: dict[str, int] = field(default_factory=dict)
    changed_rows: list[dict[str, Any]] = field(default_factory=list)
    matched_by_index: bool = False
    profile_shifts: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        sc = self.schema_changes
        return bool(
            self.rows_added
            or self.rows_removed
            or self.rows_changed
            or sc["added"]
            or sc["removed"]
            or sc["dtype_changed"]
        )

    def summary(self) -> str:
        """A few lines a person can read at a glance."""
        sc = self.schema_changes
        if self.key_columns:
            how = f"by key {', '.join(self.key_columns)}"
        else:
            how = "by index" if self.matched_by_index else "by row content"
        lines = [
            f"rows {self.old_rows:,} -> {self.new_rows:,} (matched {how}): "
            f"+{self.rows_added:,} added, -{self.rows_removed:,} removed, "
            f"~{self.rows_changed:,} changed"
        ]
        if sc["added"]:
            lines.append("columns added: " + ", ".join(sc["added"]))
        if sc["removed"]:
            lines.append("columns removed: " + ", ".join(sc["removed"]))
        for col, (old, new) in sc["dtype_changed"].items():
            lines.append(f"dtype of {col}: {old} -> {new}")
        if self.changed_columns:
            top = sorted(self.changed_columns.items(), key=lambda kv: (-kv[1], kv[0]))
            lines.append("values changed: " + ", ".join(f"{c} ({n:,})" for c, n in top if n))
        for row in self.changed_rows:
            changes = ", ".join(
                f"{c}: {old!r} -> {new!r}" for c, (old, new) in row["values"].items()
            )
            lines.append(f"  row {row['key']!r}: {changes}")
        if self.rows_changed > len(self.changed_rows):
            lines.append(
                f"  ... and {self.rows_changed - len(self.changed_rows):,} more changed rows"
            )
        shifted = [
            (col, stats["mean"]["rel_change"])
            for col, stats in self.profile_shifts.items()
            if stats["mean"]["rel_change"] is not None and abs(stats["mean"]["rel_change"]) > 0
        ]
        if shifted:
            shifted.sort(key=lambda kv: -abs(kv[1] or 0.0))
            lines.append(
                "mean shifts: " + ", ".join(f"{c} {rc:+.1%}" for c, rc in shifted[:5] if rc)
            )
        if not self.has_changes:
            lines.append("no differences")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "old_rows": self.old_rows,
            "new_rows": self.new_rows,
            "key_columns": list(self.key_columns) if self.key_columns else None,
            "schema_changes": {
                "added": list(self.schema_changes["added"]),
                "removed": list(self.schema_changes["removed"]),
                "dtype_changed": {
                    k: list(v) for k, v in self.schema_changes["dtype_changed"].items()
                },
            },
            "rows_added": self.rows_added,
            "rows_removed": self.rows_removed,
            "rows_changed": self.rows_changed,
            "changed_columns": dict(self.changed_columns),
            "changed_rows": [
                {"key": r["key"], "values": {c: list(v) for c, v in r["values"].items()}}
                for r in self.changed_rows
            ],
            "matched_by_index": self.matched_by_index,
            "profile_shifts": {
                col: {stat: dict(v) for stat, v in stats.items()}
                for col, stats in self.profile_shifts.items()
            },
            "notes": list(self.notes),
        }


def diff_versions(
    old_df: Any,
    new_df: Any,
    key_columns: list[str] | None = None,
    old_profile: dict[str, Any] | None = None,
    new_profile: dict[str, Any] | None = None,
) -> DataDiff:
    """Compare two DataFrames or Series (an older and a newer version of one dataset).

    ``key_columns`` name the columns that identify a row; they must exist in both frames and
    be unique in each. Profiles (from :func:`~nbmlops.core.data.profile.profile_frame`, e.g.
    the ones stored on a ``DatasetVersion``) are used for the numeric shifts when given.
    """
    import pandas as pd

    # A Series version diffs as a one-column frame.
    old_df = old_df.to_frame() if isinstance(old_df, pd.Series) else old_df
    new_df = new_df.to_frame() if isinstance(new_df, pd.Series) else new_df
    for label, df in (("old_df", old_df), ("new_df", new_df)):
        if not isinstance(df, pd.DataFrame):
            raise UsageError(
                f"{label} must be a pandas DataFrame, got {type(df).__name__}",
                where="diff_versions",
            )
    old_cols = [str(c) for c in old_df.columns]
    new_cols = [str(c) for c in new_df.columns]
    old_df = old_df.set_axis(old_cols, axis=1)
    new_df = new_df.set_axis(new_cols, axis=1)
    shared = [c for c in old_cols if c in set(new_cols)]
    dtype_changed = {
        c: [str(old_df[c].dtype), str(new_df[c].dtype)]
        for c in shared
        if str(old_df[c].dtype) != str(new_df[c].dtype)
    }
    schema = {
        "added": [c for c in new_cols if c not in set(old_cols)],
        "removed": [c for c in old_cols if c not in set(new_cols)],
        "dtype_changed": dtype_changed,
    }
    result = DataDiff(
        old_rows=len(old_df),
        new_rows=len(new_df),
        key_columns=list(key_columns) if key_columns else None,
        schema_changes=schema,
        rows_added=0,
        rows_removed=0,
        rows_changed=0,
    )
    if key_columns:
        _keyed_rows(result, old_df, new_df, list(key_columns), shared)
    elif _same_unique_index(old_df, new_df):
        result.matched_by_index = True
        _matched_rows(result, old_df, new_df, [], shared)
    else:
        _hashed_rows(result, old_df, new_df, shared)
    result.profile_shifts = _profile_shifts(old_df, new_df, shared, old_profile, new_profile)
    return result


def _keyed_rows(result: DataDiff, old: Any, new: Any, keys: list[str], shared: list[str]) -> None:
    missing = [k for k in keys if k not in old.columns or k not in new.columns]
    if missing:
        raise UsageError(
            f"key column(s) {', '.join(map(repr, missing))} not in both versions",
            where="diff_versions",
            fix="Pass key columns that both frames have, or no keys to match rows by content",
        )
    o = old.set_index(keys)
    n = new.set_index(keys)
    for label, idx in (("old", o.index), ("new", n.index)):
        if not idx.is_unique:
            dupes = int(idx.duplicated().sum())
            raise UsageError(
                f"key {', '.join(keys)} is not unique in the {label} version ({dupes} duplicates)",
                where="diff_versions",
                fix="Choose key columns that identify one row each, or diff without keys",
            )
    _matched_rows(result, o, n, keys, shared)


def _same_unique_index(old: Any, new: Any) -> bool:
    """Whether rows can be matched by index: unique in both, and the very same labels or an
    index both frames name alike (``id``). A default index of frames that gained or lost rows
    is not (its labels are positions), so those are matched by content."""
    if not (old.index.is_unique and new.index.is_unique):
        return False
    if old.index.equals(new.index):
        return True
    names = list(old.index.names)
    return any(n is not None for n in names) and names == list(new.index.names)


def _plain(value: Any) -> Any:
    """A numpy or pandas scalar as the Python value it holds (None for missing)."""
    import pandas as pd

    if not isinstance(value, list | tuple | dict) and pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _matched_rows(result: DataDiff, o: Any, n: Any, keys: list[str], shared: list[str]) -> None:
    """Rows matched by their index labels (the key columns, set as the index)."""
    common = o.index.intersection(n.index)
    result.rows_removed = len(o) - len(common)
    result.rows_added = len(n) - len(common)
    o_common = o.loc[common]
    n_common = n.loc[common]
    any_change = None
    per_column = {}
    for col in shared:
        if col in keys:
            continue
        changed = _value_changed(o_common[col], n_common[col])
        per_column[col] = changed
        result.changed_columns[col] = int(changed.sum())
        any_change = changed if any_change is None else (any_change | changed)
    result.rows_changed = int(any_change.sum()) if any_change is not None else 0
    if any_change is not None:
        import numpy as np

        for pos in np.flatnonzero(any_change)[:SHOWN_ROWS]:
            label = common[pos]
            result.changed_rows.append(
                {
                    "key": _plain(label)
                    if not isinstance(label, tuple)
                    else list(map(_plain, label)),
                    "values": {
                        col: [_plain(o_common[col].iloc[pos]), _plain(n_common[col].iloc[pos])]
                        for col, changed in per_column.items()
                        if changed[pos]
                    },
                }
            )
    if result.schema_changes["added"] or result.schema_changes["removed"]:
        result.notes.append(
            "rows_changed counts value changes in shared columns; added or removed columns "
            "are reported in schema_changes only"
        )


def _value_changed(a: Any, b: Any) -> Any:
    """Boolean numpy array: True where the values differ (two missing values are equal)."""
    import numpy as np

    a = a.reset_index(drop=True)
    b = b.reset_index(drop=True)
    a_na = a.isna().to_numpy(dtype=bool)
    b_na = b.isna().to_numpy(dtype=bool)
    try:
        equal = (a == b).to_numpy(dtype=bool, na_value=False)
    except (TypeError, ValueError):  # e.g. categoricals with different categories
        equal = (a.astype(object) == b.astype(object)).to_numpy(dtype=bool, na_value=False)
    return np.asarray(~equal & ~(a_na & b_na))


def _hashed_rows(result: DataDiff, old: Any, new: Any, shared: list[str]) -> None:
    import pandas as pd

    old_part, new_part = old[shared], new[shared]
    for col in result.schema_changes["dtype_changed"]:
        # Hash comparable values: cast the old column to the new dtype (or both to text).
        try:
            old_part = old_part.assign(**{col: old_part[col].astype(new_part[col].dtype)})
        except (TypeError, ValueError):
            old_part = old_part.assign(**{col: old_part[col].astype(str)})
            new_part = new_part.assign(**{col: new_part[col].astype(str)})
    old_counts = pd.util.hash_pandas_object(old_part, index=False).value_counts()
    new_counts = pd.util.hash_pandas_object(new_part, index=False).value_counts()
    both = pd.concat([old_counts.rename("old"), new_counts.rename("new")], axis=1).fillna(0)
    delta = both["new"] - both["old"]
    result.rows_added = int(delta.clip(lower=0).sum())
    result.rows_removed = int((-delta).clip(lower=0).sum())
    result.rows_changed = 0
    result.notes.append(
        "no key columns: rows were matched by a hash of their values in the shared columns, so "
        "an edited row counts as one removed and one added row and rows_changed is not computed; "
        "pass key_columns (or frames sharing a unique index) for changed-row counts"
    )


def _profile_shifts(
    old: Any,
    new: Any,
    shared: list[str],
    old_profile: dict[str, Any] | None,
    new_profile: dict[str, Any] | None,
) -> dict[str, dict[str, dict[str, float | None]]]:
    from pandas.api import types as pdt

    shifts: dict[str, dict[str, dict[str, float | None]]] = {}
    for col in shared:
        if not all(
            pdt.is_numeric_dtype(df[col].dtype) and not pdt.is_bool_dtype(df[col].dtype)
            for df in (old, new)
        ):
            continue
        before = _moments(old[col], old_profile, col)
        after = _moments(new[col], new_profile, col)
        shifts[col] = {
            stat: {
                "old": before[stat],
                "new": after[stat],
                "rel_change": _rel(before[stat], after[stat]),
            }
            for stat in ("mean", "std", "null_rate")
        }
    return shifts


def _moments(col: Any, profile: dict[str, Any] | None, name: str) -> dict[str, float | None]:
    stats = (profile or {}).get("columns", {}).get(name)
    if stats and "mean" in stats and profile and profile.get("rows"):
        return {
            "mean": stats.get("mean"),
            "std": stats.get("std"),
            "null_rate": stats["nulls"] / profile["rows"],
        }
    import numpy as np

    values = col.to_numpy(dtype="float64", na_value=np.nan)
    finite = values[np.isfinite(values)]
    n = len(values)
    return {
        "mean": _finite(finite.mean()) if finite.size else None,
        "std": _finite(finite.std(ddof=1)) if finite.size > 1 else None,
        "null_rate": float(np.isnan(values).sum() / n) if n else None,
    }


def _finite(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _rel(old: float | None, new: float | None) -> float | None:
    """(new - old) / |old|; None when either side is missing or old is 0 and new is not."""
    if old is None or new is None:
        return None
    if old == 0:
        return 0.0 if new == 0 else None
    return _finite((new - old) / abs(old))
