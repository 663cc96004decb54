"""Delayed labels joined to a real prediction log (SQLite, written by the gateway's own
PredictionLog): stored whole or not at all, and every bad input named with its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from nbmlops.cli.monitor_performance import register
from nbmlops.core.monitor.labels import attach_labels, labels_path, read_labels, scored_frame
from nbmlops.core.serving.predlog import PredictionLog
from nbmlops.exceptions import UsageError

PROBA = {"classes": [0, 1], "p": [[0.8, 0.2]]}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A prediction log: r1..r4 single-record classifier requests, b1 a batch of three,
    s1 a regressor's, e1 a failed request, and a shadow row for r1."""
    home = tmp_path / "project" / ".nbmlops"
    log = PredictionLog(home).start()
    for i in range(1, 5):
        log.record(f"r{i}", "main", "clf", 1, 200, 1.0, [{"x": float(i)}], [i % 2], proba=PROBA)
    three = {"classes": [0, 1], "p": [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]}
    log.record("b1", "main", "clf", 1, 200, 2.0, [{"x": 1.0}] * 3, [0, 1, 0], proba=three)
    log.record("r1", "shadow", "clf", 2, 200, 1.0, [{"x": 1.0}], [0])
    log.record("s1", "main", "reg", 1, 200, 1.0, [{"x": 1.0}], [0.25])
    log.record("e1", "main", "clf", 1, 422, 1.0, None, None, error="bad field")
    log.close()
    return home


def labels(**cols) -> pd.DataFrame:
    return pd.DataFrame(cols)


def test_labels_join_by_request_id_and_row(home):
    report = attach_labels(home, labels(request_id=["r1", "r2", "s1"], label=[1, 0, 0.5]))
    assert (report.added, report.replaced, report.unchanged) == (3, 0, 0)
    attach_labels(home, labels(request_id=["b1", "b1"], row=[0, 2], label=[1, 0]))
    frame = scored_frame(home)
    got = {(r.request_id, r.row): r.label for r in frame.itertuples() if r.label == r.label}
    assert got == {("r1", 0): 1, ("r2", 0): 0, ("s1", 0): 0.5, ("b1", 0): 1, ("b1", 2): 0}
    assert len(frame) == 4 + 3 + 1  # served records only: no shadow row, no failed request
    assert frame.loc[frame.request_id == "b1", "proba:1"].tolist() == [0.1, 0.7, 0.4]
    # the same labels again change nothing; a different one needs replace
    assert attach_labels(home, labels(request_id=["r1"], label=[1])).unchanged == 1
    with pytest.raises(UsageError, match="already have a different label") as err:
        attach_labels(home, labels(request_id=["r1"], label=[0]))
    assert "--replace" in str(err.value)
    assert attach_labels(home, labels(request_id=["r1"], label=[0]), replace=True).replaced == 1


@pytest.mark.parametrize(
    ("frame", "message", "fix"),
    [
        (labels(request_id=["r1", "nope", "gone"], label=[1, 0, 1]),
         "request ids are not in the prediction log as served predictions: 'nope', 'gone'",
         "X-Request-Id"),
        (labels(request_id=["r1", "r2"], label=["yes", "no"]),
         "Wrong label type for request r1: text 'yes' where the model predicts numbers",
         "its classes for a classifier"),
        (labels(request_id=["r1"], label=[2]), "2 is not one of the model's classes [0, 1]",
         "its classes"),
        (labels(request_id=["s1"], label=["high"]), "text 'high' where the model predicts",
         "numbers for a regressor"),
        (labels(request_id=["r1", "r2", "r1"], label=[1, 0, 1]),
         "1 request ids are labelled more than once: 'r1'", "one label per request id"),
        (labels(id=["r1"], label=[1]), "The labels have no column 'request_id' (columns: id, label)",
         "--id-column"),
        (labels(request_id=["r1", None], label=[1, 0]), "1 label rows have no request_id",
         "fill them in"),
        (labels(request_id=["r1"], label=[None]), "1 label rows have no label", "fill them in"),
        (labels(request_id=[], label=[]), "The labels are empty", "at least one"),
        (labels(request_id=["b1"], label=[1]), "Request b1 predicted 3 records", "'row' column"),
        (labels(request_id=["b1"], row=[3], label=[1]), "Request b1 has no record 3",
         "from 0 to 2"),
        (labels(request_id=["e1"], label=[1]), "not in the prediction log as served", "X-Request-Id"),
    ],
)  # fmt: skip
def test_bad_labels_are_refused_whole_naming_the_fix(home, frame, message, fix):
    attach_labels(home, labels(request_id=["r3"], label=[1]))
    before = read_labels(home)
    # good rows first: a refusal must not keep them
    good_first = pd.concat([labels(request_id=["r4"], label=[0]), frame], ignore_index=True)
    same_shape = list(frame.columns) == ["request_id", "label"] and not frame.empty
    for attempt in (frame, good_first) if same_shape else (frame,):
        with pytest.raises(UsageError) as err:
            attach_labels(home, attempt)
        assert message in str(err.value) and fix in str(err.value)
    pd.testing.assert_frame_equal(read_labels(home), before)


def test_label_files_of_every_kind_and_the_bad_ones(home, tmp_path):
    rows = labels(request_id=["r1", "r2"], label=[1, 0])
    rows.to_csv(tmp_path / "l.csv", index=False)
    rows.to_parquet(tmp_path / "l.parquet")
    rows.to_json(tmp_path / "l.jsonl", orient="records", lines=True)
    for name in ("l.csv", "l.parquet", "l.jsonl"):
        report = attach_labels(home, tmp_path / name)
        assert report.total == 2
    (tmp_path / "l.txt").write_text("r1,1\n")
    with pytest.raises(UsageError, match=r"Cannot read labels from a \.txt file"):
        attach_labels(home, tmp_path / "l.txt")
    with pytest.raises(UsageError, match="No label file at"):
        attach_labels(home, tmp_path / "missing.csv")
    (tmp_path / "torn.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UsageError, match="Cannot read the label file"):
        attach_labels(home, tmp_path / "torn.parquet")


def test_monitor_label_command(home, tmp_path, monkeypatch):
    monkeypatch.chdir(home.parent)
    app = register(typer.Typer())
    runner = CliRunner()
    (tmp_path / "ok.csv").write_text("request_id,label\nr1,1\nr2,0\n")
    done = runner.invoke(app, ["label", str(tmp_path / "ok.csv"), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {
        "added": 2, "replaced": 0, "unchanged": 0, "path": str(labels_path(home)), "total": 2
    }  # fmt: skip
    (tmp_path / "named.csv").write_text("rid,truth\nr3,1\n")
    named = ["label", str(tmp_path / "named.csv"), "--id-column", "rid", "--label-column", "truth"]
    assert runner.invoke(app, named).exit_code == 0
    (tmp_path / "bad.csv").write_text("request_id,label\nr4,1\nzzz,0\n")
    bad = runner.invoke(app, ["label", str(tmp_path / "bad.csv")])
    assert isinstance(bad.exception, UsageError) and "'zzz'" in str(bad.exception)
    assert sorted(read_labels(home).request_id) == ["r1", "r2", "r3"]
