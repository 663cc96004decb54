"""The panels' Python side against a real store holding real tracked runs: what a user sees in
the table, the comparison, the curves, the lineage details, the error box and the saved HTML."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from sklearn.linear_model import LogisticRegression

import nbmlops
from nbmlops.config import load_settings
from nbmlops.core import experiments as core
from nbmlops.core.lineage.store import LineageStore
from nbmlops.core.tracking.session import get_tracker, reset_tracker
from nbmlops.widgets._common import WIDGET_VIEW
from nbmlops.widgets.dashboard import Dashboard, register_tab, tab_titles, unregister_tab
from nbmlops.widgets.experiments import ExperimentsPanel
from nbmlops.widgets.lineage import LineagePanel
from tests.conftest import outputs_text, run_papermill, write_notebook

PNG = b"\x89PNG"


# --- a store with 30 tracked runs (3 failed) and a load -> features -> train lineage ---------------
def track_runs(n: int = 30) -> None:
    for i in range(n):
        lr = round(0.001 * (i + 1), 4)
        depth = i % 4 + 1
        optimizer = "adam" if i % 2 else "sgd"
        try:
            with nbmlops.track(f"fit-{i:02d}", experiment="panels", params={"opt": optimizer}):
                acc = 0.6 + lr * 10 - 0.01 * depth
                for _step in range(6):
                    nbmlops.log_metric("loss", 1.0 / (_step + 1) + lr, step=_step)
                if i % 10 == 9:
                    raise RuntimeError("diverged")
        except RuntimeError:
            pass
    assert acc > 0


def raw_frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120)})


def track_lineage() -> None:
    with nbmlops.track("load", experiment="lineage"):
        raw = raw_frame()
    with nbmlops.track("features", experiment="lineage"):
        X = raw.assign(ab=raw.a * raw.b)
        y = (raw.a > 0).astype(int)
    with nbmlops.track("train", experiment="lineage"):
        model = LogisticRegression().fit(X, y)
        acc = model.score(X, y)
    assert acc > 0.5


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made once per session (shared with test_runs_tools); each test gets its own copy in its
    ``project`` folder."""
    folder = tmp_path_factory.mktemp("panels-template")
    with pytest.MonkeyPatch.context() as mp:
        for var in list(os.environ):
            if var.startswith("NBMLOPS_") or var in ("MLFLOW_TRACKING_URI", "JPY_SESSION_NAME"):
                mp.delenv(var)
        mp.chdir(folder)
        reset_tracker()
        try:
            track_runs()
            track_lineage()
            assert get_tracker().flush(120)
        finally:
            reset_tracker()
    return folder


@pytest.fixture
def tracked(project: Path, template: Path) -> Path:
    shutil.copytree(template / ".nbmlops", project / ".nbmlops")
    return project


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def shown_names(panel: ExperimentsPanel) -> list[str]:
    """Run names in the table as rendered, top to bottom."""
    names = dict(zip(panel.runs["run_id"], panel.runs["name"], strict=True))
    return [names[r] for r in re.findall(r'data-run-id="([0-9a-f]+)"', panel.table.value)]


def click_node(panel: LineagePanel, node: str) -> None:
    """What a click on a node in the browser triggers: Plotly's click dispatch on the trace."""
    from plotly.callbacks import InputDeviceState, Points

    index = panel.drawn_nodes.index(node)
    trace = panel.chart.data[1]
    points = Points(
        point_inds=[index],
        xs=[trace.x[index]],
        ys=[trace.y[index]],
        trace_name=trace.name,
        trace_index=1,
    )
    trace._dispatch_on_click(points, InputDeviceState())


def opened(panel):
    assert panel.wait(60), "the panel's background work did not finish"
    return panel


# --- experiments panel ----------------------------------------------------------------------------
def test_table_filters_sorts_and_pages(tracked: Path):
    panel = opened(ExperimentsPanel("panels", page_size=10))
    assert panel.error == ""
    assert len(panel.runs) == 30
    assert shown_names(panel) == [f"fit-{i:02d}" for i in range(29, 19, -1)]  # newest first
    assert "rows 1-10 of 30 · page 1 of 3" in panel.page_label.value
    assert "30 runs in <b>panels</b>" in panel.status_label.value

    panel.next_button.click()
    assert shown_names(panel)[0] == "fit-19" and "page 2 of 3" in panel.page_label.value

    panel.filter_box.value = "opt=adam"  # typing in the filter box
    assert panel.page == 0
    assert "15 of 30 runs" in panel.table.value
    assert all(int(n[-2:]) % 2 for n in shown_names(panel))

    panel.status_menu.value = "FAILED"
    assert sorted(shown_names(panel)) == ["fit-09", "fit-19", "fit-29"]
    assert "FAILED" in panel.table.value and "FINISHED" not in panel.table.value

    panel.status = "ALL"
    panel.text = "acc>0.8 depth=1"  # a comparison on a metric and a param substring
    expected = {
        f"fit-{i:02d}" for i in range(30) if i % 4 == 0 and 0.6 + 0.001 * (i + 1) * 10 - 0.01 > 0.8
    }
    assert set(shown_names(panel)) == expected and expected

    panel.text = ""
    panel.sort_menu.value = "metrics.acc"
    panel.order_button.value = False  # ascending
    acc = panel.runs.set_index("name")["metrics.acc"]
    names = shown_names(panel)
    assert list(acc[names]) == sorted(acc)[:10]
    assert "acc ▲" in panel.table.value

    panel.sort_by = "lr"  # params sort as numbers: 0.01 after 0.009
    panel.ascending = False
    assert shown_names(panel)[:2] == ["fit-29", "fit-28"]


def test_selecting_runs_compares_them_and_plots_curves(tracked: Path):
    panel = opened(ExperimentsPanel("panels"))
    ids = dict(zip(panel.runs["name"], panel.runs["run_id"], strict=True))
    for name in ("fit-03", "fit-04", "fit-09"):  # ticking the check column
        panel.table.click("toggle", ids[name])
    panel.curve_metric = "loss"
    opened(panel)

    compare = panel.compare.value
    for name in ("fit-03", "fit-04", "fit-09"):
        assert name in compare
    assert "<b>lr</b>" in compare and "<b>acc</b>" in compare and "FAILED" in compare
    assert (
        compare.count("box-shadow:inset 4px 0 var(--jp-warn-color1") >= 3
    )  # status, lr, acc differ
    assert panel.table.value.count("✓</td>") == 3 or panel.selected == tuple(
        ids[n] for n in ("fit-03", "fit-04", "fit-09")
    )

    lines = panel.curve_figure["data"]  # a Plotly spec, shown by a FigureWidget
    assert len(lines) == 3 and all(len(line["x"]) == 6 for line in lines)
    assert {line["name"].split(" ")[0] for line in lines} == {"fit-03", "fit-04", "fit-09"}
    assert "loss %{y:.4g}" in lines[0]["hovertemplate"]  # the hover value
    assert len(panel.curve_chart.data) == 3
    assert "loss for 3 run(s), up to 6 step(s)" in panel.curve_note.value

    axes = [d["label"] for d in panel.parallel.spec["data"][0]["dimensions"]]
    assert {"lr", "depth"} <= set(axes) and axes[-1] == core.short(panel.parallel_metric)

    panel.clear_button.click()
    opened(panel)
    assert panel.selected == () and "Select runs" in panel.compare.value


def test_default_experiment_is_the_configured_one(tracked: Path, monkeypatch):
    monkeypatch.setenv("NBMLOPS_EXPERIMENT", "panels")
    reset_tracker()
    panel = opened(ExperimentsPanel())
    assert panel.experiment == "panels" and panel.experiment_menu.value == "panels"
    assert set(panel.experiment_menu.options) >= {"panels", "lineage"}
    panel.experiment_menu.value = "lineage"  # switching experiment in the menu
    opened(panel)
    assert sorted(shown_names(panel)) == ["features", "load", "train"]


def test_a_new_tracked_run_appears_by_itself(tracked: Path):
    panel = opened(ExperimentsPanel("panels", refresh_debounce=0.1))
    assert "late-run" not in panel.table.value
    with nbmlops.track("late-run", experiment="panels"):
        score = 0.25 * 4
    assert score == 1.0
    assert get_tracker().flush(60)
    assert eventually(lambda: "late-run" in shown_names(panel)), "the listener did not refresh"
    opened(panel)
    assert shown_names(panel)[0] == "late-run" and len(panel.runs) == 31
    assert panel.error == ""


def test_errors_show_in_the_panel_and_nothing_raises(tracked: Path, monkeypatch, capfd):
    unknown = opened(ExperimentsPanel("no-such-experiment"))
    assert "Unknown experiment 'no-such-experiment'" in unknown.error
    assert "Known experiments:" in unknown.error and "panels" in unknown.error
    assert unknown.error_box.layout.display == "block"
    assert "nbmlops-error" in unknown.error_box.value

    # a loaded panel whose store goes away: the reason shows, the table stays as it was
    panel = opened(ExperimentsPanel("panels"))
    before = panel.table.value
    panel.settings = load_settings(tracking_uri="http://127.0.0.1:9")
    started = time.monotonic()
    panel.refresh_button.click()
    opened(panel)
    assert time.monotonic() - started < 15
    assert "Cannot reach the MLflow tracking server at http://127.0.0.1:9" in panel.error
    assert panel.table.value == before and len(panel.runs) == 30
    panel.sort_by = "no-such-column"  # bad state is ignored, not raised
    panel.page = 99
    assert "page 1 of 1" in panel.page_label.value

    # a panel opened while the store is down
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    reset_tracker()
    down = opened(ExperimentsPanel())
    assert "Cannot reach the MLflow tracking server" in down.error
    bundle = down._repr_mimebundle_()
    assert "Cannot reach" in bundle["text/html"]
    err = capfd.readouterr().err
    assert "Traceback" not in err


def test_html_fallback_shows_the_runs(tracked: Path):
    panel = opened(ExperimentsPanel("panels"))
    panel.text = "fit-2"
    bundle = panel._repr_mimebundle_()
    assert bundle[WIDGET_VIEW]["model_id"] == panel.model_id
    html = bundle["text/html"]
    assert "fit-29" in html and "fit-20" in html and "fit-19" not in html
    assert "10 of 30 runs (filter: fit-2)" in html

    dash = Dashboard()
    dash.wait(60)
    html = dash._repr_mimebundle_()["text/html"]
    assert "Experiments, Lineage" in html and "nbmlops-runs" in html


# --- lineage panel ----------------------------------------------------------------------------------
def test_lineage_panel_shows_the_selected_nodes_details(tracked: Path):
    graph_runs = {}
    panel = opened(LineagePanel(raw_frame()))  # a DataFrame: found by its content digest
    assert panel.error == ""
    g = panel.graph.graph
    for _node, attrs in g.nodes(data=True):
        if attrs["kind"] == "run":
            graph_runs[attrs["label"]] = attrs["run_id"]
    assert g.nodes[panel.focus]["kind"] == "data" and g.nodes[panel.focus]["label"] == "raw"
    details = panel.details.value
    assert g.nodes[panel.focus]["digest"] in details and "120 x 2" in details
    assert "float64" in details  # the schema
    labels = [label for label, _node in panel.node_list.options]
    assert any(label.startswith("run train") for label in labels)
    nodes = panel.figure["data"][1]  # the Plotly chart: labels beside the nodes, ids on hover
    assert nodes["textposition"] == "middle right" and len(nodes["x"]) == len(labels)
    assert all(n in hover for n, hover in zip(panel.drawn_nodes, nodes["hovertext"], strict=True))
    xs = dict(zip(panel.drawn_nodes, nodes["x"], strict=True))
    assert xs[panel.focus] < max(xs.values())  # the raw data sits left of what it feeds

    # picking the training run in the list: params and metrics come from MLflow
    train = next(
        node
        for _label, node in panel.node_list.options
        if node.startswith("run:") and g.nodes[node]["label"] == "train"
    )
    click_node(panel, train)  # a click on the chart's node selects it
    opened(panel)
    assert panel.selected == train and panel.node_list.value == train
    assert graph_runs["train"] in panel.details.value
    assert "FINISHED" in panel.details.value
    fields = dict(panel.details_fields)
    assert "acc" in fields["metrics"] and fields["status (MLflow)"] == "FINISHED"

    # the model: class and how to load it
    model = next(n for n in g.nodes if n.startswith("model:"))
    panel.selected = model
    opened(panel)
    assert "LogisticRegression" in panel.details.value
    assert f"runs:/{graph_runs['train']}/model" in panel.details.value

    # filtering the list
    panel.filter_box.value = "run "
    assert {label.split()[0] for label, _n in panel.node_list.options} == {"run"}


def test_lineage_panel_takes_run_ids_uris_and_estimators(tracked: Path):
    probe = opened(LineagePanel())  # no focus: the most recent run
    g = probe.graph.graph
    assert g.nodes[probe.focus]["label"] == "train"
    run_id = g.nodes[probe.focus]["run_id"]

    by_id = opened(LineagePanel(run_id))
    assert by_id.focus == probe.focus
    by_uri = opened(LineagePanel(f"runs:/{run_id}/model"))
    assert by_uri.focus.startswith("model:")
    estimator = LogisticRegression().fit(raw_frame(), [0, 1] * 60)
    by_value = opened(LineagePanel(estimator, namespace={"model": estimator}))
    assert by_value.focus == by_uri.focus

    bad = opened(LineagePanel("nothing-like-this"))
    assert "Nothing in the lineage matches 'nothing-like-this'" in bad.error
    bad.what_box.value = run_id  # the user corrects it in the box
    bad.show_button.click()
    opened(bad)
    assert bad.error == "" and bad.focus == probe.focus
    anonymous = opened(LineagePanel(LogisticRegression().fit(raw_frame(), [0, 1] * 60)))
    assert "No tracked model" in anonymous.error and "lineage('model')" in anonymous.error


# --- the dashboard and %mlops -----------------------------------------------------------------------
@pytest.fixture
def shell(tracked: Path):
    sh = InteractiveShell.instance()
    sh.reset(new_session=True)
    sh.run_line_magic("load_ext", "nbmlops")
    assert "mlops" in sh.magics_manager.magics["line"]
    yield sh
    sh.run_line_magic("unload_ext", "nbmlops")
    assert "mlops" not in sh.magics_manager.magics["line"]
    sh.reset(new_session=True)


def test_mlops_magic_shows_a_dashboard_with_the_panels(shell):
    import ipywidgets

    with capture_output() as out:
        result = shell.run_cell("%mlops")
    assert result.success
    dash = result.result
    assert isinstance(dash, ipywidgets.Tab)
    assert dash.titles == ("Experiments", "Lineage", "Registry", "Monitoring")
    assert [type(p).__name__ for p in dash.panels.values()] == ["ExperimentsPanel"]
    dash.selected_index = 1  # the lineage panel is built when its tab is first shown
    dash.wait(60)
    assert isinstance(dash.panels["Lineage"], LineagePanel)
    assert any(WIDGET_VIEW in o.data for o in out.outputs) or result.result is dash

    with capture_output():
        lineage_first = shell.run_cell("%mlops Lineage").result
    assert lineage_first.selected_index == 1 and list(lineage_first.panels) == ["Lineage"]

    with capture_output() as out:
        result = shell.run_cell("%mlops Nowhere")
    assert "No dashboard tab 'Nowhere'" in str(result.error_in_exec)
    assert "Experiments, Lineage" in str(result.error_in_exec)


def test_registered_tabs_join_the_dashboard_and_a_broken_one_stays_contained(tracked: Path):
    import ipywidgets

    register_tab("Notes", lambda: ipywidgets.HTML("<p>notes</p>"))
    register_tab("Broken", lambda: 1 / 0, position=0)
    try:
        assert tab_titles() == [
            "Broken", "Experiments", "Lineage", "Registry", "Monitoring", "Notes",
        ]  # fmt: skip
        dash = Dashboard()
        assert dash.titles == (
            "Broken", "Experiments", "Lineage", "Registry", "Monitoring", "Notes",
        )  # fmt: skip
        assert "The Broken tab failed to open: ZeroDivisionError" in dash.panels["Broken"].value
        dash.selected_index = 5
        assert dash.panels["Notes"].value == "<p>notes</p>"
        with pytest.raises(nbmlops.exceptions.UsageError, match="already registered"):
            register_tab("Notes", lambda: ipywidgets.HTML(""))
    finally:
        unregister_tab("Notes")
        unregister_tab("Broken")
    assert tab_titles() == ["Experiments", "Lineage", "Registry", "Monitoring"]


# --- 1,000 runs and a 200-node lineage --------------------------------------------------------------
def synthetic_runs(n: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    start = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="min")
    frame = pd.DataFrame(
        {
            "run_id": [f"{i:032x}" for i in range(n)],
            "name": [f"sweep-{i:04d}" for i in range(n)],
            "status": np.where(np.arange(n) % 13 == 0, "FAILED", "FINISHED"),
            "start": start,
            "end": start + pd.Timedelta(seconds=30),
            "duration": 30.0,
            "user": "ana",
            "params.lr": [str(v) for v in rng.choice([0.001, 0.01, 0.1], n)],
            "params.depth": [str(v) for v in rng.integers(1, 12, n)],
            "params.opt": rng.choice(["adam", "sgd"], n),
            "metrics.acc": rng.random(n),
            "metrics.loss": rng.random(n),
        }
    )
    return frame


def test_a_thousand_runs_filter_sort_and_page(project: Path):
    runs = synthetic_runs()
    panel = ExperimentsPanel(autoload=False)
    panel.runs = runs
    panel._update_menus()
    panel._apply()
    assert "1,000 runs" in panel.table.value and len(shown_names(panel)) == 50
    panel.text = "opt=adam acc>0.5"
    expected = runs[(runs["params.opt"] == "adam") & (runs["metrics.acc"] > 0.5)]
    assert f"{len(expected):,} of 1,000 runs" in panel.table.value
    panel.sort_by = "loss"
    panel.ascending = True
    assert shown_names(panel)[0] == expected.sort_values("metrics.loss")["name"].iloc[0]
    assert len(panel.view) == len(expected)
    panel.page = 3
    assert f"page 4 of {-(-len(expected) // 50)}" in panel.page_label.value
    opened(panel)

    # the pure functions agree with pandas
    assert len(core.filter_runs(runs, "", "FAILED")) == len(range(0, 1000, 13))
    assert core.sort_runs(runs, "depth")["params.depth"].astype(int).is_monotonic_increasing


def synthetic_lineage(path: Path, runs: int = 67) -> list[str]:
    """A chain: data_0 -> run_0 -> data_1 (+ model_0) -> run_1 -> ... (3 nodes per run)."""
    store = LineageStore(path)
    for i in range(runs):
        store.record_run(
            f"k{i:03d}",
            run_id=None,
            name=f"step-{i:03d}",
            experiment="chain",
            status="FINISHED",
            start_ms=1_700_000_000_000 + i,
            end_ms=1_700_000_000_500 + i,
            source=None,
            datasets=[
                {"name": "x", "digest": f"{i:032x}", "role": "input", "shape": [10, 2]},
                {"name": "x", "digest": f"{i + 1:032x}", "role": "output", "shape": [10, 2]},
            ],
            models=[{"name": "m", "class": "sklearn.linear_model.Ridge", "trained_on": "x"}],
            tracking_uri="sqlite://",
        )
    return [f"run:k{i:03d}" for i in range(runs)]


def test_a_200_node_lineage_lists_filters_and_draws(project: Path):
    synthetic_lineage(project / ".nbmlops" / "lineage.db")
    panel = opened(LineagePanel("data:" + "0" * 32))  # the first input: all 202 nodes follow
    assert panel.error == ""
    assert panel.view.graph.number_of_nodes() == 202
    assert len(panel.node_list.options) == 202
    assert len(panel.figure["data"][1]["x"]) == 200  # the 200 nearest drawn
    panel.filter_box.value = "step-01"
    assert len(panel.node_list.options) == 10
    panel.node_list.value = panel.node_list.options[0][1]
    opened(panel)
    assert "step-010" in panel.details.value


# --- the saved notebook shows the runs without a kernel -----------------------------------------------
@pytest.mark.kernel
def test_an_executed_notebook_keeps_an_html_summary_of_the_runs(project: Path):
    nb = write_notebook(
        project / "board.ipynb",
        [
            "%load_ext nbmlops",
            "%%track first-run\nalpha = 0.5\nscore = alpha * 3",
            "%%track second-run\nalpha = 0.25\nscore = alpha * 3",
            "import nbmlops.panels\nnbmlops.panels.dashboard()",
        ],
    )
    run_papermill(nb, project)
    out = project / "board.out.ipynb"
    import nbformat

    cells = nbformat.read(str(out), as_version=4).cells
    data = cells[-1].outputs[-1]["data"]
    assert WIDGET_VIEW in data
    assert "first-run" in data["text/html"] and "second-run" in data["text/html"]
    assert "Traceback" not in outputs_text(out)


def test_core_experiments_imports_no_jupyter():
    code = "import nbmlops.core.experiments, sys; print('IPython' in sys.modules, 'ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_lineage_opens_on_this_notebooks_newest_run_not_the_stores(tracked: Path):
    from nbmlops.api.lineage import lineage_graph

    settings = load_settings(tracked)
    graph = lineage_graph(settings).graph
    ours = {n: a for n, a in graph.nodes(data=True) if a["kind"] == "run"}
    newest_ms = max(a.get("end_ms") or a["start_ms"] for a in ours.values())
    # a run of another notebook, newer than every run of ours
    LineageStore(settings.home_dir / "lineage.db").record_run(
        "other-notebook-run",
        run_id=None,
        name="elsewhere",
        experiment="other",
        status="FINISHED",
        start_ms=newest_ms + 60_000,
        end_ms=newest_ms + 61_000,
        source=str(tracked / "other.ipynb"),
        datasets=[],
        models=[],
        tracking_uri=settings.resolved_tracking_uri,
    )
    [(mine_node, mine)] = [
        (n, a) for n, a in ours.items() if (a.get("end_ms") or a["start_ms"]) == newest_ms
    ]
    assert mine["source"], mine
    panel = opened(LineagePanel(settings=settings, notebook=mine["source"]))
    assert panel.focus == mine_node and graph.nodes[panel.focus]["label"] != "elsewhere"
    panel.close()
    elsewhere = opened(LineagePanel(settings=settings, notebook=str(tracked / "other.ipynb")))
    assert elsewhere.graph.graph.nodes[elsewhere.focus]["label"] == "elsewhere"
    elsewhere.close()


def test_curves_open_on_the_metric_with_the_most_steps_by_step_or_time(tracked: Path):
    panel = opened(ExperimentsPanel("panels"))
    ids = dict(zip(panel.runs["name"], panel.runs["run_id"], strict=True))
    assert len(panel.metric_menu.options) > 1  # acc has one value per run, loss six
    panel.selected = (ids["fit-03"], ids["fit-05"])
    opened(panel)
    assert panel.curve_metric == "loss" and panel.metric_menu.value == "loss"
    assert [len(line["y"]) for line in panel.curve_figure["data"]] == [6, 6]
    assert panel.curve_figure["layout"]["xaxis"]["title"]["text"] == "step"

    panel.x_menu.value = "time"
    opened(panel)
    xs = panel.curve_figure["data"][0]["x"]
    assert panel.curve_figure["layout"]["xaxis"]["title"]["text"] == "wall time"
    assert xs[0].startswith("20") and "T" in xs[0]
    before = panel.curve_figure["data"][0]["y"]
    panel.smooth_slider.value = 0.5
    opened(panel)
    after = panel.curve_figure["data"][0]["y"]
    assert after[0] == before[0] and after[1] == pytest.approx((before[0] + before[1]) / 2)
    panel.close()


def test_an_unknown_filter_field_is_named_with_the_known_ones(tracked: Path):
    panel = opened(ExperimentsPanel("panels"))
    panel.filter_box.value = "accuracy>0.9"
    assert "Unknown field 'accuracy' in the filter" in panel.error
    assert "Did you mean acc?" in panel.error and "lr" in panel.error
    assert panel.error_box.layout.display == "block"
    panel.filter_box.value = "acc>0.6"
    assert panel.error == "" and 0 < len(panel.view) < len(panel.runs)
    panel.close()


def test_clicks_in_the_runs_table_select_sort_and_open_runs(tracked: Path):
    panel = opened(ExperimentsPanel("panels"))
    ids = dict(zip(panel.runs["name"], panel.runs["run_id"], strict=True))
    table = panel.table
    table.click("toggle", ids["fit-03"])  # the check column
    table.click("toggle", ids["fit-04"])
    opened(panel)
    assert panel.selected == (ids["fit-03"], ids["fit-04"])
    assert "fit-04" in panel.compare.value and 'aria-checked="true"' in table.value
    table.click("toggle", ids["fit-03"])
    assert panel.selected == (ids["fit-04"],)

    table.click("sort", "metrics.acc")  # a header
    assert panel.sort_by == "metrics.acc" and not panel.ascending
    table.click("sort", "metrics.acc")
    assert panel.ascending
    assert 'data-col="metrics.acc"' in table.value and "acc ▲" in table.value

    table.click("open", ids["fit-05"])  # a row
    opened(panel)
    assert panel.opened == ids["fit-05"]
    assert "run fit-05" in panel.run_box.value and ids["fit-05"] in panel.run_box.value
    panel.close()
