"""Schema checks and drift detection for DataFrames, built on pandera and scipy.

Three steps, each usable on its own:

* :func:`infer_schema` turns a reference frame into a pandera ``DataFrameSchema`` (dtypes,
  nullability, numeric ranges, allowed categories, unique ids, strict column set);
* :func:`save_schema` / :func:`load_schema` keep that schema as pandera's own YAML, which a
  person can read and edit (widen a range, add a category) and load back;
* :func:`validate_frame` checks a frame against the schema (lazily, so every failure is
  collected) and, when a reference is given, compares each column's distribution with it.

The result is a :class:`ValidationReport`; :func:`raise_if_failed` turns a failed report into
:class:`~nbmlops.exceptions.ValidationFailed` for callers that want ``strict`` behaviour.

This module holds :func:`validate_frame` and :func:`raise_if_failed`; the schema functions live in
``schema``, the report in ``report``, the failure cases and outliers in ``checks``, the drift
tests in ``drift`` and the column classification they share in ``column_kinds``.

Plain Python: no IPython here. pandas, numpy, pandera, scipy and matplotlib are imported inside
the functions that need them, so importing these modules costs nothing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from nbmlops.core.data.checks import outlier_counts, schema_errors
from nbmlops.core.data.column_kinds import check_frame
from nbmlops.core.data.drift import measure_drift
from nbmlops.core.data.report import ValidationReport
from nbmlops.core.data.schema import check_schema, infer_schema, load_schema
from nbmlops.exceptions import UsageError, ValidationFailed

if TYPE_CHECKING:
    import pandas as pd
    from pandera.api.pandas.container import DataFrameSchema

__all__ = ["raise_if_failed", "validate_frame"]


def validate_frame(
    df: pd.DataFrame,
    *,
    reference: pd.DataFrame | None = None,
    schema: DataFrameSchema | str | os.PathLike[str] | None = None,
    p_threshold: float = 0.01,
    psi_threshold: float = 0.2,
    categorical_max: int = 50,
) -> ValidationReport:
    """Check ``df`` against a schema and, when ``reference`` is given, for drift.

    ``schema`` is a pandera ``DataFrameSchema`` or the path of a YAML file from
    :func:`save_schema`; it defaults to ``infer_schema(reference, categorical_max=...)``. One of
    ``schema`` / ``reference`` is required. Validation is lazy: every failure case is collected.

    Drift (only with a reference) is measured on each column the reference and ``df`` share
    that is numeric in both (two-sample KS test) or categorical in the reference
    (string/object/category/bool with at most ``categorical_max`` distinct values; chi-square
    test on the counts of the union of categories, so one seen on one side only counts as 0 on
    the other). Nulls are left out of both tests (the schema checks nullability). Both kinds
    also get PSI: numeric over ``PSI_BINS`` reference-quantile bins, categorical over the
    categories; empty bins count as ``PSI_EPSILON``. Id-like columns (see :func:`infer_schema`)
    and datetimes are not compared.

    The drift rule::

        drifted = (p < p_threshold and (psi >= psi_threshold or kind == "categorical"))
                  or psi >= psi_threshold

    which is the same as: ``psi >= psi_threshold`` flags any column; a categorical column is
    also flagged by a significant chi-square alone. The KS p-value is reported for numeric
    columns, but a numeric column is flagged by the size of its shift (PSI), not by
    significance alone, so large samples do not flag negligible shifts.

    ``passed`` is false when there is any schema failure case or drifted column. Call
    :func:`raise_if_failed` to turn that into an exception.
    """
    df = check_frame(df, "df")
    if reference is not None:
        reference = check_frame(reference, "reference")
        if len(reference) == 0 or reference.shape[1] == 0:
            raise UsageError(
                "the reference frame is empty",
                fix="pass the training data (or another non-empty sample) as the reference",
            )
    if not 0.0 < p_threshold < 1.0:
        raise UsageError(
            f"p_threshold must be between 0 and 1, got {p_threshold}", fix="use e.g. 0.01"
        )
    if psi_threshold <= 0:
        raise UsageError(f"psi_threshold must be positive, got {psi_threshold}", fix="use e.g. 0.2")

    if schema is None:
        if reference is None:
            raise UsageError(
                "validate_frame needs a schema or a reference frame",
                fix="pass reference=<training frame> or schema=<DataFrameSchema or YAML path>",
            )
        schema = infer_schema(reference, categorical_max=categorical_max)
    elif isinstance(schema, str | os.PathLike):
        schema = load_schema(schema)
    schema = check_schema(schema)

    errors = schema_errors(schema, df)

    drift = (
        measure_drift(
            df,
            reference,
            p_threshold=p_threshold,
            psi_threshold=psi_threshold,
            categorical_max=categorical_max,
        )
        if reference is not None
        else []
    )

    columns = [str(c) for c in schema.columns]
    columns += [str(c) for c in df.columns if str(c) not in columns]
    return ValidationReport(
        passed=errors.empty and not any(d.drifted for d in drift),
        schema_errors=errors,
        outliers=outlier_counts(df, reference),
        drift=drift,
        rows=len(df),
        nulls={str(c): int(df[c].isna().sum()) for c in df.columns},
        dtypes={str(c): str(df[c].dtype) for c in df.columns},
        columns=columns,
    )


def raise_if_failed(report: ValidationReport) -> ValidationReport:
    """Raise :class:`~nbmlops.exceptions.ValidationFailed` (carrying ``report``) unless it
    passed; return the report otherwise, so calls can be chained."""
    if not isinstance(report, ValidationReport):
        raise UsageError(
            f"raise_if_failed takes a ValidationReport, got {type(report).__name__}",
            fix="pass the result of validate_frame(...)",
        )
    if report.passed:
        return report
    first = report.summary().splitlines()
    raise ValidationFailed(
        report,
        what="data validation failed: " + " ".join(first[1:]),
        fix="see err.report.to_table() and err.report.schema_errors; fix the data, or edit the "
        "schema YAML (save_schema / load_schema) if the new values are legitimate",
    )
