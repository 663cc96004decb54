"""The runs table's tools against a real store of tracked runs: the column picker, grouping,
CSV export under the project, notes and tags written to MLflow, and selection by the check
column alone."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from nbmlops.core import experiments as core
from nbmlops.widgets.experiments import ExperimentsPanel
from nbmlops.widgets.html import fmt
from nbmlops.widgets.lineage import LineagePanel
from tests.widgets.test_panels import click_node, opened, synthetic_lineage, template, tracked

__all__ = ["template", "tracked"]  # fixtures shared with test_panels


def headers(panel: ExperimentsPanel) -> set[str]:
    return set(re.findall(r'data-col="([^"]+)"', panel.table.value))


def row_ids(panel: ExperimentsPanel) -> list[str]:
    return re.findall(r'data-run-id="([0-9a-f]+)"', panel.table.value)


def test_the_column_picker_shows_chosen_columns_remembered_for_the_experiment(tracked: Path):
    panel = opened(ExperimentsPanel("panels"))
    assert {"params.lr", "params.depth", "metrics.acc"} <= headers(panel)
    assert "metrics.acc" in [v for _label, v in panel.tools.columns_menu.options]

    panel.tools.columns_menu.value = ("metrics.acc",)  # picking in the menu
    assert panel.columns == ("metrics.acc",)
    assert "metrics.acc" in headers(panel) and "params.lr" not in headers(panel)
    panel.close()

    again = opened(ExperimentsPanel("panels"))  # the same kernel session: remembered
    assert again.columns == ("metrics.acc",)
    assert "params.lr" not in headers(again)
    assert again.tools.columns_menu.value == ("metrics.acc",)
    again.tools.columns_reset.click()
    assert again.columns is None and "params.lr" in headers(again)
    again.close()


def test_grouping_by_a_param_shows_counts_best_metric_and_folds(tracked: Path):
    panel = opened(ExperimentsPanel("panels"))
    panel.tools.group_menu.value = "params.opt"
    assert panel.group_by == "params.opt"
    table = panel.table.value
    assert re.findall(r'data-group="([^"]+)"', table) == ["adam", "sgd"]  # newest first: fit-29
    runs = panel.runs
    for opt in ("adam", "sgd"):
        best = runs.loc[runs["params.opt"] == opt, "metrics.acc"].max()
        assert f"opt = {opt}</b> · 15 run(s) · best acc {fmt(best, 'metrics.acc')}" in table
    assert len(row_ids(panel)) == 30

    panel.table.click("group", "adam")  # a click on the group's header folds it
    assert panel.collapsed == ("adam",)
    assert 'aria-expanded="false"' in panel.table.value and len(row_ids(panel)) == 15
    names = dict(zip(runs["run_id"], runs["params.opt"], strict=True))
    assert {names[r] for r in row_ids(panel)} == {"sgd"}
    panel.table.click("group", "adam")
    assert panel.collapsed == () and len(row_ids(panel)) == 30

    panel.sort_by = "loss"  # a lower-is-better metric: the group's best is its lowest
    best = runs.loc[runs["params.opt"] == "sgd", "metrics.loss"].min()
    assert f"· best loss {fmt(best, 'metrics.loss')}" in panel.table.value
    panel.close()


def test_csv_export_writes_what_is_shown_and_stays_in_the_project(tracked: Path):
    panel = opened(ExperimentsPanel("panels"))
    panel.text = "opt=adam"
    panel.tools.columns_menu.value = ("metrics.acc",)
    panel.tools.export_button.click()
    opened(panel)
    written = tracked / "exports" / "panels-runs.csv"
    assert f"Wrote 15 run(s) to {written}" in panel.tools.export_result.value
    frame = pd.read_csv(written)
    assert len(frame) == 15 and "metrics.acc" in frame and "params.lr" not in frame
    assert set(frame["run_id"]) == set(panel.view["run_id"])

    outside = tracked.parent / "escaped.csv"
    for path in ("../escaped.csv", str(outside), "exports/../../escaped.csv"):
        panel.tools.export_path.value = path
        panel.tools.export_button.click()
        opened(panel)
        result = panel.tools.export_result.value
        assert "Not exported" in result and "leaves the project folder" in result, path
    assert not outside.exists()
    panel.tools.export_path.value = "runs.txt"
    panel.tools.export_button.click()
    opened(panel)
    assert "does not end in .csv" in panel.tools.export_result.value
    panel.close()


def test_notes_and_tags_are_written_to_mlflow_and_secrets_refused(tracked: Path):
    panel = opened(ExperimentsPanel("panels"))
    ids = dict(zip(panel.runs["name"], panel.runs["run_id"], strict=True))
    run_id = ids["fit-05"]
    panel.table.click("open", run_id)
    opened(panel)
    tools = panel.tools
    client = core.client(panel.settings)
    before = client.get_run(run_id).data.tags["mlflow.note.content"]  # the cell, as recorded
    assert tools.editor.layout.display == "flex" and tools.note_box.value == before

    tools.note_box.value = "lr sweep, **best so far**"
    tools.tags_box.value = "team=vision, stage=tuned"
    tools.save_button.click()
    opened(panel)
    assert "Saved to MLflow: the note and 2 tag(s)" in tools.edit_result.value
    tags = client.get_run(run_id).data.tags
    assert tags["mlflow.note.content"] == "lr sweep, **best so far**"
    assert tags["team"] == "vision" and tags["stage"] == "tuned"
    # the table offers the tags as columns and groups
    assert "tags.team" in [v for _label, v in tools.columns_menu.options]
    assert "tags.team" in [v for _label, v in tools.group_menu.options]

    tools.tags_box.value = "team=vision"  # a tag taken out of the text is deleted
    tools.save_button.click()
    opened(panel)
    assert "stage" not in client.get_run(run_id).data.tags

    refusals = [
        ("ok", "api_key=abc123xyz", "has a name that holds secrets"),
        ("password=hunter2hunter2", "team=vision", "looks like a secret"),
        ("ok", "mlflow.user=eve", "system tag"),
        ("ok", "team", "no name=value form"),
    ]
    for note, text, why in refusals:
        tools.note_box.value, tools.tags_box.value = note, text
        tools.save_button.click()
        opened(panel)
        result = tools.edit_result.value
        assert "Not saved" in result and why in result, (text, result)
    after = client.get_run(run_id).data.tags
    assert after["mlflow.note.content"] == "lr sweep, **best so far**"
    assert "api_key" not in after and after["mlflow.user"] != "eve"
    assert "hunter2" not in str(after)
    panel.close()


def test_runs_are_selected_by_the_check_column_only(tracked: Path):
    panel = opened(ExperimentsPanel("panels"))
    assert not hasattr(panel, "picker")  # no second list to ctrl-click in
    ids = dict(zip(panel.runs["name"], panel.runs["run_id"], strict=True))
    panel.table.click("toggle", ids["fit-01"])
    panel.table.click("toggle", ids["fit-02"])
    opened(panel)
    assert panel.selected == (ids["fit-01"], ids["fit-02"])
    panel.clear_button.click()
    opened(panel)
    assert panel.selected == () and "check column" in panel.compare.value
    panel.close()


def log_figure(client, run_id: str, folder: Path, name: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([1, 2, 3])
    path = folder / name
    fig.savefig(path, format="png")
    client.log_artifact(run_id, str(path), "figures")


def test_compare_shows_figures_side_by_side_and_the_code_difference(tracked: Path):
    panel = opened(ExperimentsPanel("panels"))
    ids = dict(zip(panel.runs["name"], panel.runs["run_id"], strict=True))
    client = core.client(panel.settings)
    for name in ("fit-03", "fit-04"):
        log_figure(client, ids[name], tracked, f"{name}-curve.png")
    client.log_text(ids["fit-04"], "lr = 0.005\nmodel.fit(X, y)\n", "code/cell.py")
    client.log_text(ids["fit-03"], "lr = 0.004\nmodel.fit(X, y)\n", "code/cell.py")
    for name in ("fit-03", "fit-04"):
        panel.table.click("toggle", ids[name])
    opened(panel)

    figures = panel.figures_view.value
    assert figures.count("data:image/png;base64,") == 2
    assert figures.index("fit-03-curve.png") < figures.index("fit-04-curve.png")
    code = panel.code_view.value
    assert re.search(r"<b>fit-03[^<]*</b> → <b>fit-04", code)
    assert re.search(r'nbmlops-diff-removed"[^>]*>-lr = 0\.004<', code)
    assert re.search(r'nbmlops-diff-added"[^>]*>\+lr = 0\.005<', code)
    assert "nbmlops-diff-same" in code and " model.fit(X, y)" in code
    panel.close()


def test_brushing_the_parallel_coordinates_narrows_the_table(tracked: Path):
    panel = opened(ExperimentsPanel("panels"))
    ids = dict(zip(panel.runs["name"], panel.runs["run_id"], strict=True))
    chosen = ["fit-01", "fit-11", "fit-21", "fit-25"]
    for name in chosen:
        panel.table.click("toggle", ids[name])
    panel.parallel.metric_menu.value = "metrics.acc"
    opened(panel)
    spec = panel.parallel.spec
    dims = spec["data"][0]["dimensions"]
    assert dims[-1]["label"] == "acc" and spec["data"][0]["type"] == "parcoords"
    assert {"lr", "depth"} <= {d["label"] for d in dims}  # opt: adam in all four, left out
    assert spec["data"][0]["line"]["color"] == dims[-1]["values"]
    assert len(panel.parallel.chart.data[0].dimensions) == len(dims)

    acc = panel.runs.set_index("name")["metrics.acc"]
    low = sorted(acc[chosen])[2]  # the two best runs of the four
    panel.parallel.brush(len(dims) - 1, low, 1.0)  # a drag along the acc axis
    opened(panel)
    expected = {n for n in chosen if acc[n] >= low}
    assert len(expected) == 2
    names = dict(zip(panel.runs["run_id"], panel.runs["name"], strict=True))
    assert {names[r] for r in row_ids(panel)} == expected
    assert "2 of 30 runs" in panel.table.value and "brushed" in panel.table.value

    panel.table.click("toggle", ids["fit-01"])  # a new selection drops the brush
    opened(panel)
    assert panel.brushed is None and len(row_ids(panel)) == 30
    panel.close()


def test_a_300_node_lineage_draws_zooms_with_the_wheel_and_selects_on_click(project: Path):
    synthetic_lineage(project / ".nbmlops" / "lineage.db", runs=100)
    panel = opened(LineagePanel("data:" + "0" * 32, max_nodes=400))
    assert panel.error == "" and len(panel.drawn_nodes) == 301
    assert panel.chart._config.get("scrollZoom") is True  # the wheel zooms, a drag pans
    assert panel.figure["layout"]["dragmode"] == "pan"
    node = "run:k077"
    click_node(panel, node)
    opened(panel)
    assert panel.selected == node and "step-07" in panel.details.value
    panel.close()


def test_parallel_coordinates_fall_back_to_a_metric_the_selected_runs_logged(project: Path):
    from tests.widgets.test_panels import synthetic_runs

    runs = synthetic_runs(6)
    runs["metrics.f1"] = [None, None, None, 0.5, 0.6, 0.7]  # only the last three logged f1
    panel = ExperimentsPanel(autoload=False)
    panel.runs = runs
    panel._update_menus()
    panel._apply()
    panel.parallel_metric = "metrics.f1"
    panel.selected = tuple(runs["run_id"][:2])  # two runs without f1
    opened(panel)
    assert panel.parallel_metric == "metrics.acc"
    assert panel.parallel.spec["data"][0]["dimensions"][-1]["label"] == "acc"
    assert len(panel.parallel.run_ids) == 2
    panel.close()
