"""Schema inference, YAML round trips, schema errors, drift and the report, on generated data.

Every frame comes from fixed seeds. The reference has 3,000 rows and a current sample 1,500;
the columns that are not meant to drift keep KS / chi-square p-values far above 0.01 and PSI
far below 0.2 for these seeds. Bounded columns are clipped so that both samples reach the
same extremes (a sample's min/max is what the inferred range check uses).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from nbmlops.core.data.drift import ColumnDrift
from nbmlops.core.data.report import ValidationReport
from nbmlops.core.data.schema import infer_schema, load_schema, save_schema
from nbmlops.core.data.validate import raise_if_failed, validate_frame
from nbmlops.exceptions import UsageError, ValidationFailed

CITIES = ["paris", "lyon", "nice"]
CITY_P = (0.5, 0.3, 0.2)
COMPARED = ["age", "score", "visits", "city", "plan", "churned"]


def make_frame(n: int, seed: int, *, shift: float = 0.0, city_p=CITY_P) -> pd.DataFrame:
    """Customers: an id, clipped numeric columns, bounded integers and three categoricals.

    ``shift`` moves ``score`` by that many standard deviations (its sd is 20).
    """
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": np.arange(n) + seed * 1_000_000,
            "age": np.clip(rng.normal(40, 12, n), 18, 75),
            "score": np.clip(rng.normal(50, 20, n), 0, 100) + shift * 20,
            "visits": rng.integers(0, 10, n),
            "city": rng.choice(CITIES, n, p=list(city_p)),
            "plan": pd.Categorical(rng.choice(["free", "pro"], n, p=[0.7, 0.3])),
            "churned": rng.random(n) < 0.2,
        }
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return make_frame(3000, seed=1)


@pytest.fixture(scope="module")
def same() -> pd.DataFrame:
    return make_frame(1500, seed=3)


@pytest.fixture(scope="module")
def shifted() -> pd.DataFrame:
    return make_frame(1500, seed=3, shift=1.0, city_p=(0.4, 0.3, 0.3))


# --------------------------------------------------------------------------------------------
# infer_schema


def test_inferred_schema_describes_the_reference(reference):
    schema = infer_schema(reference)
    cols = schema.columns
    assert list(cols) == list(reference.columns)
    assert schema.strict is True
    assert schema.ordered is False

    assert cols["user_id"].unique is True
    assert not cols["user_id"].checks  # an id has no range
    assert all(not c.nullable for c in cols.values())

    age_range = cols["age"].checks[0]
    assert age_range.name == "in_range"
    lo, hi = age_range.statistics["min_value"], age_range.statistics["max_value"]
    assert lo <= reference["age"].min() and hi >= reference["age"].max()
    assert reference["age"].min() - lo < 1e-3 and hi - reference["age"].max() < 1e-3
    visits = cols["visits"].checks[0].statistics
    assert (visits["min_value"], visits["max_value"]) == (0, 9)

    assert cols["city"].checks[0].statistics["allowed_values"] == sorted(CITIES)
    assert cols["plan"].checks[0].statistics["allowed_values"] == ["free", "pro"]
    assert cols["churned"].checks[0].statistics["allowed_values"] == [False, True]

    # The reference passes its own schema.
    schema.validate(reference)


def test_nullable_only_where_the_reference_has_nulls_and_categorical_max(reference):
    ref = reference.copy()
    ref["note"] = [f"free text {i % 70}" for i in range(len(ref))]  # 70 distinct values
    ref.loc[5, "age"] = np.nan
    schema = infer_schema(ref, categorical_max=50)
    assert schema.columns["age"].nullable is True
    assert schema.columns["score"].nullable is False
    assert not schema.columns["note"].checks  # too many distinct values for an isin check
    assert infer_schema(ref, categorical_max=100).columns["note"].checks[0].name == "isin"


def test_range_margin_widens_the_inferred_ranges(reference):
    older = reference.assign(age=reference["age"].clip(upper=60))
    assert not validate_frame(reference, schema=infer_schema(older)).passed
    assert validate_frame(reference, schema=infer_schema(older, range_margin=0.5)).passed


# --------------------------------------------------------------------------------------------
# passing, drift


def test_frame_from_the_same_distribution_passes(reference, same):
    report = validate_frame(same, reference=reference)
    assert report.passed, report.summary()
    assert report.schema_errors.empty
    assert list(report.schema_errors.columns) == ["column", "check", "failure_case", "index"]
    assert [d.column for d in report.drift] == COMPARED  # the id column is not compared
    for d in report.drift:
        assert not d.drifted
        assert d.p_value > 0.05, d
        assert d.psi < 0.05, d
    assert report.rows == len(same)
    assert "passed" in report.summary()
    # Column order does not matter (ordered=False).
    assert validate_frame(same[same.columns[::-1]], reference=reference).passed


def test_shifted_numeric_and_categorical_columns_are_flagged(reference, shifted):
    report = validate_frame(shifted, reference=reference)
    assert not report.passed
    drift = {d.column: d for d in report.drift}

    score = drift["score"]
    assert (score.kind, score.test) == ("numeric", "ks")
    assert score.drifted
    assert score.p_value < 1e-10
    assert score.psi >= 0.2

    city = drift["city"]
    assert (city.kind, city.test) == ("categorical", "chi2")
    assert city.drifted
    assert city.p_value < 1e-6
    assert city.psi < 0.2  # flagged by the chi-square test alone

    for name in ["age", "visits", "plan", "churned"]:
        assert not drift[name].drifted, drift[name]
    assert report.drifted_columns == ["score", "city"]
    # Shifting by one sd also pushes values past the reference's range.
    assert set(report.schema_errors["column"]) == {"score"}


def test_drift_rule_psi_decides_numeric_columns_p_also_decides_categorical(reference, same):
    # With p_threshold 0.5 some numeric KS p-values fall below it, but no numeric PSI reaches
    # 0.2, so no numeric column drifts; a categorical column below 0.5 does.
    report = validate_frame(same, reference=reference, p_threshold=0.5)
    numeric = [d for d in report.drift if d.kind == "numeric"]
    assert any(d.p_value < 0.5 for d in numeric)
    assert not any(d.drifted for d in numeric)
    for d in report.drift:
        if d.kind == "categorical":
            assert d.drifted == (d.p_value < 0.5)
    # PSI at or above its threshold flags any column, whatever the p-value.
    report = validate_frame(same, reference=reference, psi_threshold=0.005)
    assert any(d.drifted and d.p_value > 0.01 for d in report.drift)
    assert all(
        d.drifted == (d.psi >= 0.005 or (d.kind == "categorical" and d.p_value < 0.01))
        for d in report.drift
    )


def test_category_seen_on_one_side_only_is_handled(reference):
    cur = make_frame(1500, seed=3)
    cur["city"] = cur["city"].replace({"nice": "lille"})  # nice vanishes, lille appears
    report = validate_frame(cur, reference=reference)
    city = next(d for d in report.drift if d.column == "city")
    assert city.drifted
    assert np.isfinite(city.statistic) and np.isfinite(city.psi) and city.psi > 1
    assert set(report.schema_errors["column"]) == {"city"}
    assert set(report.schema_errors["failure_case"]) == {"lille"}


def test_outliers_count_values_beyond_the_reference_iqr_fences(reference, same):
    cur = same.copy()
    cur.loc[:9, "visits"] = 1000  # far beyond the fences (and the range)
    report = validate_frame(cur, reference=reference)
    q1, q3 = np.quantile(reference["visits"], [0.25, 0.75])
    lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    expected = int(((cur["visits"] < lo) | (cur["visits"] > hi)).sum())
    assert report.outliers["visits"] == expected == 10
    assert "user_id" not in report.outliers  # ids have no outliers
    assert "city" not in report.outliers


# --------------------------------------------------------------------------------------------
# schema errors


def _break_dtype(df):
    return df.assign(age=df["age"].round(1).astype(str))


def _break_nulls(df):
    out = df.copy()
    out.loc[4, "score"] = np.nan
    return out


def _break_range(df):
    out = df.copy()
    out.loc[7, "visits"] = 99
    return out


def _break_category(df):
    out = df.copy()
    out.loc[2, "city"] = "atlantis"
    return out


def _break_missing(df):
    return df.drop(columns=["plan"])


def _break_extra(df):
    return df.assign(surprise=1)


def _break_duplicate_id(df):
    out = df.copy()
    out.loc[3, "user_id"] = out.loc[4, "user_id"]
    return out


@pytest.mark.parametrize(
    ("breaker", "column", "check", "failure_case", "index"),
    [
        (_break_dtype, "age", "dtype('float64')", "str", None),
        (_break_nulls, "score", "not_nullable", None, 4),
        (_break_range, "visits", "in_range(0, 9)", 99, 7),
        (_break_category, "city", "isin(['lyon', 'nice', 'paris'])", "atlantis", 2),
        (_break_missing, "plan", "column_in_dataframe", "plan", None),
        (_break_extra, "surprise", "column_in_schema", "surprise", None),
        (_break_duplicate_id, "user_id", "field_uniqueness", None, 3),
    ],
    ids=["dtype", "nulls", "range", "category", "missing", "extra", "duplicate-id"],
)
def test_each_schema_error_names_its_column(
    reference, same, breaker, column, check, failure_case, index
):
    schema = infer_schema(reference)
    report = validate_frame(breaker(same), schema=schema)
    assert not report.passed
    errs = report.schema_errors
    assert list(errs.columns) == ["column", "check", "failure_case", "index"]
    mine = errs[errs["column"] == column]
    assert not mine.empty, errs
    assert check in set(mine["check"]), errs
    row = mine[mine["check"] == check].iloc[0]
    if failure_case is not None:
        assert row["failure_case"] == failure_case
    if index is not None:
        assert index in set(mine["index"])
    table = report.to_table().set_index("column")
    assert table.loc[column, "schema_errors"] >= 1
    assert check in table.loc[column, "checks_failed"]
    assert column in report.summary()


def test_all_errors_are_collected_at_once_and_the_table_flags_them(reference, same):
    broken = _break_extra(_break_missing(_break_range(_break_nulls(_break_dtype(same)))))
    report = validate_frame(broken, schema=infer_schema(reference))
    assert {"age", "score", "visits", "plan", "surprise"} <= set(report.schema_errors["column"])
    table = report.to_table().set_index("column")
    assert list(table.index) == [*reference.columns, "surprise"]
    assert not table.loc["age", "dtype_ok"]
    assert table.loc["score", "dtype_ok"] and table.loc["score", "nulls"] == 1
    assert not table.loc["plan", "present"]
    assert not table.loc["surprise", "expected"]


# --------------------------------------------------------------------------------------------
# YAML


def test_yaml_round_trip(tmp_path, reference, same):
    schema = infer_schema(reference)
    path = save_schema(schema, tmp_path / "schemas" / "customers.yaml")
    assert path.is_file()
    loaded = load_schema(path)
    assert loaded.to_yaml() == path.read_text()
    assert list(loaded.columns) == list(schema.columns)
    assert loaded.strict is True and loaded.columns["user_id"].unique
    assert validate_frame(same, schema=loaded).passed
    # A path works as the schema argument too.
    assert validate_frame(same, schema=path).passed
    assert validate_frame(same, schema=str(path)).passed


def test_editing_the_yaml_changes_the_result(tmp_path, reference, same):
    path = save_schema(infer_schema(reference), tmp_path / "customers.yaml")
    older = _break_range(same)  # visits == 99 on one row
    assert not validate_frame(older, schema=path).passed

    text = path.read_text()
    doc = yaml.safe_load(text)
    assert doc["columns"]["visits"]["in_range"]["max_value"] == 9
    # Widen the range by hand, the way a person would.
    edited = text.replace("max_value: 9\n", "max_value: 120\n")
    assert edited != text
    path.write_text(edited)
    report = validate_frame(older, schema=path)
    assert report.passed, report.summary()

    # Allow a new category too.
    path.write_text(edited.replace("    - paris\n", "    - paris\n    - atlantis\n"))
    assert validate_frame(_break_category(same), schema=path).passed


def test_broken_yaml_names_the_file_and_line(tmp_path, reference):
    path = save_schema(infer_schema(reference), tmp_path / "customers.yaml")
    lines = path.read_text().splitlines(keepends=True)
    bad_line = next(i for i, line in enumerate(lines) if "max_value" in line)
    lines[bad_line] = lines[bad_line].replace("max_value:", "max_value: [1,")
    path.write_text("".join(lines))
    with pytest.raises(UsageError) as err:
        load_schema(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "line" in msg and "not valid YAML" in msg


def test_misspelt_check_in_yaml_is_refused_not_ignored(tmp_path, reference):
    path = save_schema(infer_schema(reference), tmp_path / "customers.yaml")
    text = path.read_text()
    path.write_text(text.replace("in_range:", "in_rnge:", 1))
    with pytest.raises(UsageError, match="in_rnge") as err:
        load_schema(path)
    assert str(path) in str(err.value) and "line" in str(err.value)
    path.write_text(text.replace("dtype: float64", "dtype: flot64", 1))
    with pytest.raises(UsageError, match="flot64"):
        load_schema(path)


def test_missing_or_empty_schema_file(tmp_path, same):
    with pytest.raises(UsageError, match="not found") as err:
        load_schema(tmp_path / "nope.yaml")
    assert "save_schema" in str(err.value)
    with pytest.raises(UsageError, match="not found"):
        validate_frame(same, schema=tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(UsageError, match="columns"):
        load_schema(tmp_path / "empty.yaml")


# --------------------------------------------------------------------------------------------
# report, errors


def test_report_table_dict_and_summary(reference, shifted):
    report = validate_frame(shifted, reference=reference)
    assert isinstance(report, ValidationReport)
    assert all(isinstance(d, ColumnDrift) for d in report.drift)

    table = report.to_table()
    assert list(table["column"]) == list(reference.columns)
    assert {
        "dtype_ok",
        "nulls",
        "outliers",
        "test",
        "statistic",
        "p_value",
        "psi",
        "drifted",
    } <= set(table.columns)
    row = table.set_index("column").loc["score"]
    assert row["test"] == "ks" and row["drifted"] and row["psi"] >= 0.2
    assert pd.isna(table.set_index("column").loc["user_id", "test"])

    as_dict = report.to_dict()
    assert json.loads(json.dumps(as_dict, allow_nan=False)) == as_dict
    assert as_dict["passed"] is False
    assert as_dict["drifted_columns"] == ["score", "city"]
    assert as_dict["schema_error_count"] == len(report.schema_errors)

    text = report.summary()
    assert text.startswith("Validation FAILED")
    assert "score" in text and "city" in text
    assert len(text.splitlines()) <= 6


def test_raise_if_failed(reference, same, shifted):
    ok = validate_frame(same, reference=reference)
    assert raise_if_failed(ok) is ok
    bad = validate_frame(shifted, reference=reference)
    with pytest.raises(ValidationFailed) as err:
        raise_if_failed(bad)
    assert err.value.report is bad
    assert "score" in str(err.value)


def test_bad_input_is_a_usage_error(reference):
    with pytest.raises(UsageError, match="DataFrame"):
        validate_frame([1, 2, 3], reference=reference)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="DataFrame"):
        infer_schema({"a": [1]})  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="empty"):
        validate_frame(reference, reference=reference.iloc[:0])
    with pytest.raises(UsageError, match="empty"):
        infer_schema(reference.iloc[:0])
    with pytest.raises(UsageError, match="schema or a reference"):
        validate_frame(reference)
    with pytest.raises(UsageError, match="DataFrameSchema"):
        validate_frame(reference, schema={"age": float})  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="p_threshold"):
        validate_frame(reference, reference=reference, p_threshold=5)


# --------------------------------------------------------------------------------------------
# plot, import cost


def test_plot_one_axis_per_column_and_saves_png(tmp_path, reference, shifted):
    from matplotlib.figure import Figure

    report = validate_frame(shifted, reference=reference)
    fig = report.plot(shifted, reference)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == len(COMPARED)
    titles = {ax.get_title().split()[0]: ax.title.get_color() for ax in fig.axes}
    assert set(titles) == set(COMPARED)
    assert titles["score"] == "red" and titles["city"] == "red"
    assert titles["age"] != "red"
    # Drifted columns come first.
    assert [ax.get_title().split()[0] for ax in fig.axes[:2]] == ["score", "city"]

    out = tmp_path / "drift.png"
    fig.savefig(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    small = report.plot(shifted, reference, max_columns=2)
    assert len(small.axes) == 2


def test_importing_validate_is_cheap():
    code = (
        "import sys, json, nbmlops.core.data.validate\n"
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('pandera', 'scipy', 'matplotlib', 'IPython'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_saved_file_is_plain_pandera_yaml(tmp_path, reference):
    path = save_schema(infer_schema(reference), tmp_path / "s.yaml")
    doc = yaml.safe_load(Path(path).read_text())
    assert doc["schema_type"] == "dataframe"
    assert set(doc["columns"]) == set(reference.columns)
    assert doc["strict"] is True
