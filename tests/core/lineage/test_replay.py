"""The slice of a kernel's execution history that a tracked run depends on, on recorded
histories kept in a real lineage.db."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbmlops.core.lineage.cells import CellRecord
from nbmlops.core.lineage.replay import replay_slice, slice_history, write_notebook
from nbmlops.core.lineage.store import LineageStore
from nbmlops.exceptions import UsageError

T0 = 1_700_000_000_000


def cell(seq: int, source: str, reads=(), binds=(), *, count=None, error=None, session="s1"):
    return CellRecord(
        session=session,
        seq=seq,
        execution_count=count if count is not None else seq,
        ts_ms=T0 + seq * 10_000,
        duration_ms=500,
        source=source,
        reads=list(reads),
        binds=list(binds),
        tracked=source.startswith("%%track"),
        error=error,
    )


# Out of order, one cell edited and run again, an unrelated cell in between, a failed cell,
# and a cell of another kernel session.
HISTORY = [
    cell(1, "%load_ext nbmlops\nimport numpy as np", binds=["np"]),
    cell(2, "import pandas as pd", binds=["pd"]),
    cell(3, "rng = np.random.default_rng(0)", ["np"], ["rng"]),
    cell(4, "X = rng.normal(size=(50, 3))\ny = X[:, 0] > 0", ["rng"], ["X", "y"]),
    cell(5, "summary = pd.DataFrame(X).describe()", ["pd", "X"], ["summary"]),  # unrelated
    cell(6, "scale = 2.0", binds=["scale"]),  # first version, since edited
    cell(7, "scale = 3.0", binds=["scale"]),  # the edited cell run again
    cell(8, "X = X * scale\n%data commit X\n%promote m 1", ["X", "scale"], ["X"]),
    cell(9, "bad = 1 / 0", binds=["bad"], error="ZeroDivisionError: division by zero"),
    cell(10, "X[0, 0] = 0.0", ["X"]),  # changed in place
    cell(
        11,
        "%%track fit\nfrom sklearn.linear_model import LogisticRegression\n"
        "clf = LogisticRegression().fit(X, y)\nacc = clf.score(X, y)",
        ["X", "y"],
        ["LogisticRegression", "clf", "acc"],
    ),
    cell(12, "print(summary)", ["summary"]),
]


def records(history: list[CellRecord]) -> list[dict]:
    return [json.loads(json.dumps(c.to_dict())) for c in history]


def test_the_slice_keeps_exactly_the_cells_the_run_needs_in_execution_order():
    piece = slice_history(records(HISTORY), 10, "r1")
    assert [c["seq"] for c in piece.cells] == [1, 3, 4, 7, 8, 10, 11]
    assert piece.replayable, piece.blockers
    assert piece.skipped == 4  # pandas, the summary, the first scale, the failed cell
    sources = [s for s, _ in piece.sources()]
    assert sources[0] == "%load_ext nbmlops"
    assert sources[1] == "import numpy as np"  # its own %load_ext is not repeated
    assert "scale = 3.0" in sources and "scale = 2.0" not in sources
    assert sources[-1].startswith("%%track fit")
    assert "X = X * scale" in sources  # project magics are not done again


def test_a_name_no_recorded_cell_bound_is_named():
    history = records(HISTORY)
    history[2]["binds"] = []  # rng made outside any recorded cell
    piece = slice_history(history, 10)
    assert not piece.replayable
    assert [b.what for b in piece.blockers] == ["rng"]
    assert "outside any recorded cell" in piece.blockers[0].reason


@pytest.fixture
def store(tmp_path: Path) -> LineageStore:
    lineage = LineageStore(tmp_path / "lineage.db")
    for c in HISTORY:
        lineage.record_cell(c)
    lineage.record_cell(cell(1, "x = 1", binds=["x"], session="other"))
    lineage.record_run(
        "key1",
        run_id="abcdef0123456789",
        name="fit",
        experiment="e",
        status="FINISHED",
        start_ms=T0 + 11 * 10_000 + 100,
        end_ms=None,
        source=None,
        datasets=[],
        models=[],
        tracking_uri="sqlite:///x",
    )
    yield lineage
    lineage.close()


def test_a_run_id_prefix_finds_its_cell_and_the_notebook_is_written(
    store: LineageStore, tmp_path: Path
):
    piece = replay_slice(store, "abcdef", tmp_path)
    assert piece.run_id == "abcdef0123456789"
    assert [c["seq"] for c in piece.cells] == [1, 3, 4, 7, 8, 10, 11]
    path = write_notebook(piece, tmp_path / "reproduce" / "abcdef" / "replay.ipynb")
    nb = json.loads(path.read_text())
    assert [c["source"] for c in nb["cells"]][:2] == ["%load_ext nbmlops", "import numpy as np"]
    assert nb["cells"][-1]["metadata"]["nbmlops"]["execution_count"] == 11
    assert nb["metadata"]["nbmlops"]["replays"] == "abcdef0123456789"
    with pytest.raises(UsageError, match="No run 'zzz'"):
        replay_slice(store, "zzz", tmp_path)


def test_a_missing_input_file_is_named(store: LineageStore, tmp_path: Path):
    store.record_cell(
        cell(13, "import pandas as pd\ndf = pd.read_csv('gone.csv')", [], ["pd", "df"])
    )
    store.record_cell(cell(14, "%%track\nn = len(df)", ["df"], ["n"]))
    store.record_run(
        "key2",
        run_id="ffff000011112222",
        name="n",
        experiment="e",
        status="FINISHED",
        start_ms=T0 + 14 * 10_000 + 100,
        end_ms=None,
        source=None,
        datasets=[],
        models=[],
        tracking_uri="sqlite:///x",
    )
    piece = replay_slice(store, "ffff", tmp_path)
    assert [c["seq"] for c in piece.cells] == [13, 14]
    assert [b.what for b in piece.blockers] == ["gone.csv"]
    assert "no longer exists" in piece.blockers[0].reason
    (tmp_path / "gone.csv").write_text("a\n1\n")
    assert replay_slice(store, "ffff", tmp_path).replayable


def test_unseeded_generators_are_named_and_seeded_ones_are_not():
    from nbmlops.core.pipeline.reproduce_replay import unseeded_calls

    assert unseeded_calls(
        [
            "%%track\nidx = np.random.permutation(10)",
            "a, b = train_test_split(X, test_size=0.2)\nrng = np.random.default_rng()",
            "s = df.sample(frac=0.5, random_state=1)\nr = np.random.default_rng(0)",
        ]
    ) == [
        "np.random.permutation(10)",
        "train_test_split(X, test_size=0.2)",
        "np.random.default_rng()",
    ]
    assert unseeded_calls(["np.random.seed(0)\nidx = np.random.permutation(10)"]) == []
