"""Request bodies against a signature with every column type MLflow knows (no server)."""

from __future__ import annotations

import json
import math

import pytest

from nbmlops.core.serving.errors import InvalidInput
from nbmlops.core.serving.schema import InputSchema, parse_body, validate_payload

SIGNATURE = {
    "signature": {
        "inputs": json.dumps(
            [
                {"type": "long", "name": "age", "required": True},
                {"type": "integer", "name": "visits", "required": False},
                {"type": "double", "name": "spend", "required": True},
                {"type": "float", "name": "score", "required": False},
                {"type": "boolean", "name": "member", "required": True},
                {"type": "string", "name": "plan", "required": True},
                {"type": "datetime", "name": "since", "required": False},
                {"type": "binary", "name": "blob", "required": False},
                {"type": "array", "items": {"type": "double"}, "name": "hist", "required": False},
            ]
        )
    }
}
GOOD = {"age": 41, "spend": 10.5, "member": True, "plan": "pro"}


@pytest.fixture
def schema() -> InputSchema:
    found = InputSchema.from_mlmodel(SIGNATURE)
    assert found is not None
    return found


def refused(schema, rows, status=422):
    with pytest.raises(InvalidInput) as err:
        validate_payload(rows, schema)
    assert err.value.status == status
    return err.value


def test_a_full_row_becomes_a_frame_in_signature_order_and_dtypes(schema):
    row = {**GOOD, "visits": 3, "score": 0.25, "since": "2024-05-01T10:00:00", "blob": "aGk=",
           "hist": [1.0, 2.0]}  # fmt: skip
    frame = validate_payload([row, GOOD], schema).frame()
    assert list(frame.columns) == list(schema.names)
    assert str(frame.age.dtype) == "int64" and str(frame.spend.dtype) == "float64"
    assert str(frame.score.dtype) == "float32" and str(frame.member.dtype) == "bool"
    assert math.isnan(frame.visits[1]) and frame.visits[0] == 3  # optional int with a gap
    assert frame.blob[0] == b"hi" and frame.blob[1] is None
    assert str(frame.since.dtype).startswith("datetime64")
    assert frame["hist"][0] == [1.0, 2.0]


def test_integral_floats_are_accepted_for_integers(schema):
    rows = validate_payload([{**GOOD, "age": 41.0}], schema)
    assert rows.columns["age"] == [41] and type(rows.columns["age"][0]) is int


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"age": 41.5}, "age", "an integer"),
        ({"age": "41"}, "age", "an integer"),
        ({"age": True}, "age", "an integer"),
        ({"age": 2**63}, "age", "out of range"),
        ({"visits": 2**31}, "visits", "out of range"),
        ({"spend": None}, "spend", "null"),
        ({"spend": float("nan")}, "spend", "NaN"),
        ({"spend": float("-inf")}, "spend", "out of range"),
        ({"score": 1e39}, "score", "out of range"),
        ({"member": 1}, "member", "true or false"),
        ({"plan": 3}, "plan", "a string"),
        ({"since": "yesterday"}, "since", "ISO 8601"),
        ({"blob": "***"}, "blob", "base64"),
    ],
)
def test_wrong_values_name_the_field(schema, change, field, words):
    err = refused(schema, [GOOD, {**GOOD, **change}])
    assert err.fields == [field]
    assert repr(field) in err.message and words in err.message and "row 1" in err.message


def test_optional_columns_may_be_null_or_absent(schema):
    rows = validate_payload([{**GOOD, "visits": None, "score": float("nan")}, GOOD], schema)
    assert rows.columns["visits"] == [None, None]


def test_structure_errors(schema):
    assert refused(schema, [{**GOOD, "extra": 1, "more": 2}]).fields == ["extra", "more"]
    assert refused(schema, [{"age": 1}]).fields == ["member", "plan", "spend"]
    assert refused(schema, {"dataframe_split": {"columns": ["age", "age"], "data": [[1, 2]]}})
    assert refused(schema, {"dataframe_split": {"columns": "age", "data": [[1]]}})
    assert refused(schema, {"dataframe_split": {"columns": ["age"], "data": []}})
    assert refused(schema, {"dataframe_split": {"columns": ["age"], "data": [[1]], "x": 1}})
    assert refused(schema, {"records": {"age": 1}})
    assert "got null" in refused(schema, parse_body(b"null")).message
    for body in (b"", b"{", b"\xff", b"[1,]"):
        with pytest.raises(InvalidInput) as err:
            parse_body(body)
        assert err.value.status == 400


def test_no_signature_accepts_any_records():
    rows = validate_payload([{"a": 1, "b": "x"}, {"a": 2}], None)
    assert list(rows.frame().columns) == ["a", "b"]
    assert InputSchema.from_mlmodel({}) is None
    tensor = {"signature": {"inputs": json.dumps([{"type": "tensor", "tensor-spec": {}}])}}
    assert InputSchema.from_mlmodel(tensor) is None


HUGE = "9" * 400


@pytest.mark.parametrize(
    ("field", "literal"),
    [
        ("spend", HUGE),  # double
        ("spend", "1e400"),
        ("spend", "-1e999999999"),
        ("score", HUGE),  # float32
        ("age", HUGE),  # long
        ("age", "7" * 5000),  # more digits than Python converts
        ("age", "1e400"),
        ("visits", "1e300"),  # integer
        ("member", HUGE),  # boolean
        ("plan", HUGE),  # string
        ("plan", "7" * 5000),
        ("since", HUGE),  # datetime
        ("blob", "1e400"),  # binary
        ("hist", f"[1.0, {HUGE}]"),  # array
        ("hist", f"[[{'7' * 5000}]]"),
    ],
)
def test_numbers_that_do_not_fit_name_the_field_in_every_format(schema, field, literal):
    row = {**GOOD, field: "PLACEHOLDER"}
    names = list(row)
    values = ", ".join(literal if n == field else json.dumps(row[n]) for n in names)
    text = json.dumps(row).replace('"PLACEHOLDER"', literal)
    for body in (
        f"[{text}]",
        f'{{"records": [{text}]}}',
        f'{{"dataframe_records": [{text}]}}',
        f'{{"instances": [{text}]}}',
        f'{{"dataframe_split": {{"columns": {json.dumps(names)}, "data": [[{values}]]}}}}',
    ):
        err = refused(schema, parse_body(body.encode()))
        assert err.fields == [field], (body[:80], err.message)
        assert repr(field) in err.message
        assert len(err.message) < 300  # the number is not echoed in full


def test_values_numpy_or_pandas_refuse_become_422_naming_the_column(schema):
    # Each a valid ISO 8601 date-time, but pandas makes no column of them.
    for pair in (("2024-01-01T00:00:00+00:00", "2024-01-01T00:00:00"),
                 ("2024-01-01T00:00:00+01:00", "2024-01-01T00:00:00+02:00")):  # fmt: skip
        rows = validate_payload([{**GOOD, "since": since} for since in pair], schema)
        with pytest.raises(InvalidInput) as err:
            rows.frame()
        assert err.value.status == 422 and err.value.fields == ["since"]
        assert "'since'" in err.value.message


def test_array_columns_stay_one_value_per_row(schema):
    rows = validate_payload([{**GOOD, "hist": [1.0, 2.0]}, {**GOOD, "hist": [3.0, 4.0]}], schema)
    frame = rows.frame()
    assert frame["hist"].tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_no_signature_refuses_only_numbers_no_type_can_hold():
    err = refused(None, parse_body(f'[{{"a": 1, "b": {HUGE}}}]'.encode()))
    assert err.fields == ["b"]
    assert validate_payload([{"a": 2**70, "b": 1e300}], None).n_rows == 1
