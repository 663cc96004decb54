"""A version's model card: build it at registration (lineage drawing, permutation importance),
log it to the source run, read it back, edit it."""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.core.registry.card import (
    INDICATIVE_NOTE,
    ModelCard,
    figure_png,
    fit_labels,
    importance_figure,
    permutation_importances,
    render_html,
    render_markdown,
)
from nbmlops.core.registry.names import as_version, check_model_name
from nbmlops.exceptions import ModelNotFound, UsageError

if TYPE_CHECKING:
    from nbmlops.core.lineage.graph import LineageGraph
    from nbmlops.core.registry.context import RegistryContext
    from nbmlops.core.registry.scan import ScanReport

__all__ = [
    "CARD_DIR",
    "card_dir",
    "card_html",
    "card_images",
    "card_tags",
    "new_card",
    "read_card",
    "read_or_edit_card",
    "write_card",
]

CARD_DIR = "model_card"


def new_card(name: str, logged: Any, run: Any, user: str, description: str | None) -> ModelCard:
    data = run.data if run is not None else None
    tags = logged.tags or {}
    return ModelCard(
        name=name,
        version=0,
        created=time.time(),
        registered_by=user,
        model_id=logged.model_id,
        run_id=logged.source_run_id,
        source=logged.artifact_location,
        model_class=tags.get("nbmlops.class") or None,
        git_commit=(data.tags.get("mlflow.source.git.commit") if data else None) or None,
        description=(description or "").strip(),
        metrics=dict(data.metrics) if data else {},
        params=dict(data.params) if data else {},
    )


def card_images(
    card: ModelCard,
    local: Path,
    report: ScanReport,
    graph: LineageGraph,
    node: str | None,
    holdout: str | None,
    holdout_xy: tuple[Any, Any] | None,
    training: tuple[Any, Any, str] | None = None,
) -> dict[str, bytes]:
    """Lineage drawing and permutation importance (fills the card's fields): on the holdout
    when given, else on the training data (``training``: X, y, basis) when it was found, else
    on the logged input example (indicative only)."""
    images: dict[str, bytes] = {}
    if node is not None:
        images["lineage"] = figure_png(fit_labels(graph.draw(graph.view(node))))
    else:
        card.lineage_note = (
            "The model was not logged by a tracked cell, so its training data is unknown."
        )
    try:
        from mlflow.models import Model

        card.inputs = list(Model.load(str(local)).get_input_schema().input_names())
    except Exception:
        card.inputs = []
    if not report.loadable:  # nothing in the folder is unpickled unless the scan passed
        card.importance_note = (
            "Not computed: the security scan flagged the model, so it was not loaded."
            if report.flagged
            else "Not computed: the security scan could not check every model file, so "
            "the model was not loaded."
        )
        return images
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(local))
    if holdout_xy is not None:
        X, y = holdout_xy
        card.importance, card.importance_metric = permutation_importances(model.predict, X, y)
        card.importance_basis = f"holdout {holdout} ({len(X)} rows, true target)"
    elif training is not None:
        X, y, basis = training
        try:
            card.importance, card.importance_metric = permutation_importances(model.predict, X, y)
            card.importance_basis = basis
            card.importance_note = (
                "Computed on the data the model was fitted on: it shows what the model relies "
                "on, not how it does on new data. Register with --holdout NAME@k --target COL "
                "for that."
            )
        except Exception as err:
            card.importance_note = f"Not computed on the training data: {err}"
            return images
    else:
        try:
            example = Model.load(str(local)).load_input_example(str(local))
        except Exception:
            example = None
        if example is None or not hasattr(example, "columns") or len(example) == 0:
            card.importance_note = (
                "Not computed: no holdout data version was given and the model has no "
                "logged input example (register with --holdout NAME@k --target COL)."
            )
            return images
        try:
            y = model.predict(example)
            card.importance, card.importance_metric = permutation_importances(
                model.predict, example, y
            )
            card.importance_basis = f"logged input example ({len(example)} rows)"
            card.importance_note = INDICATIVE_NOTE.format(rows=len(example))
        except Exception as err:
            card.importance_note = f"Not computed on the input example: {err}"
            return images
    images["importance"] = figure_png(importance_figure(card))
    return images


def card_dir(card: ModelCard) -> str:
    return f"{CARD_DIR}/{card.name}/v{card.version}"


def write_card(
    ctx: RegistryContext,
    card: ModelCard,
    images: dict[str, bytes],
    report: ScanReport | None,
    run_id: str | None,
) -> str:
    """Log card.json/md/html, the images and scan.json to the run; return the card URI."""
    if not run_id:
        raise UsageError(
            f"{card.name} v{card.version} has no source run to keep its card in",
            fix="Register a model logged within a run.",
        )
    folder = card_dir(card)
    with tempfile.TemporaryDirectory(prefix="nbmlops-card-") as tmp:
        out = Path(tmp)
        names = {k: f"{k}.png" for k in images}
        for key, png in images.items():
            (out / names[key]).write_bytes(png)
        (out / "card.json").write_text(card.to_json(), encoding="utf-8")
        (out / "card.md").write_text(render_markdown(card, names), encoding="utf-8")
        (out / "card.html").write_text(render_html(card, images), encoding="utf-8")
        if report is not None:
            (out / "scan.json").write_text(
                json.dumps(report.to_dict(), indent=2, default=str), encoding="utf-8"
            )
        ctx.client.log_artifacts(run_id, str(out), artifact_path=folder)
    return f"runs:/{run_id}/{folder}"


def card_tags(card: ModelCard, card_uri: str) -> dict[str, str]:
    return {
        "nbmlops.card": card_uri,
        "nbmlops.card.intended_use": card.intended_use[:4000],
        "nbmlops.card.limitations": card.limitations[:4000],
        "nbmlops.card.complete": str(card.complete).lower(),
    }


def read_card(ctx: RegistryContext, mv: Any) -> tuple[ModelCard, dict[str, bytes]]:
    uri = (mv.tags or {}).get("nbmlops.card")
    if not uri:
        raise ModelNotFound(
            f"{mv.name} v{mv.version} has no model card",
            fix="Only versions registered with nbmlops have one; register the model "
            "with %register to get one.",
        )
    with tempfile.TemporaryDirectory(prefix="nbmlops-card-") as tmp:
        local = ctx.download(uri, tmp)
        card = ModelCard.from_json((local / "card.json").read_text(encoding="utf-8"))
        images = {
            p.stem: p.read_bytes()
            for p in local.glob("*.png")
            if p.stem in ("lineage", "importance")
        }
    return card, images


def read_or_edit_card(
    ctx: RegistryContext,
    name: str,
    version: int | str,
    *,
    intended_use: str | None = None,
    limitations: str | None = None,
    description: str | None = None,
) -> ModelCard:
    """The version's model card; with field values, edit and re-render it first
    (developer role; audited as ``model.card.edit``)."""
    name = check_model_name(name)
    version = as_version(version)
    edits = {
        k: v.strip()
        for k, v in (
            ("intended_use", intended_use),
            ("limitations", limitations),
            ("description", description),
        )
        if v is not None
    }
    if not edits:
        ctx.require(name, "viewer", "read the card")
        with ctx.store(f"read the card of {name} v{version}"):
            return read_card(ctx, ctx.version(name, version))[0]
    ctx.require(name, "developer", f"edit the card of version {version}")
    ctx.ensure_store()
    with ctx.store(f"edit the card of {name} v{version}"), ctx.lock(name):
        mv = ctx.version(name, version)
        card, images = read_card(ctx, mv)
        before = {k: getattr(card, k) for k in edits}
        for key, value in edits.items():
            setattr(card, key, value)
        card.edits.append({"ts": time.time(), "user": ctx.user, "fields": sorted(edits)})
        old_tags = dict(mv.tags or {})
        card_uri = write_card(ctx, card, images, None, mv.run_id)
        new_tags = card_tags(card, card_uri)
        try:
            for key, value in new_tags.items():
                ctx.client.set_model_version_tag(name, str(version), key, value)
            ctx.audit.append(
                "model.card.edit",
                f"models:/{name}/{version}",
                user=ctx.user,
                details={
                    "fields": sorted(edits),
                    "before": before,
                    "after": edits,
                    "complete": card.complete,
                },
            )
        except BaseException:
            for key in new_tags:
                with contextlib.suppress(Exception):
                    if key in old_tags:
                        ctx.client.set_model_version_tag(name, str(version), key, old_tags[key])
            raise
    return card


def card_html(ctx: RegistryContext, name: str, version: int | str) -> str:
    """The version's card as one self-contained HTML page."""
    name = check_model_name(name)
    version = as_version(version)
    ctx.require(name, "viewer", "read the card")
    with ctx.store(f"read the card of {name} v{version}"):
        card, images = read_card(ctx, ctx.version(name, version))
    return render_html(card, images)
