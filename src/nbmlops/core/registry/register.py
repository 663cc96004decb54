"""Registering a logged model as a new version: resolve what to register, check its structure,
digest and scan its files, tag the version with its lineage and log its model card."""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from typing import TYPE_CHECKING, Any

from nbmlops.core.registry.card_store import card_images, card_tags, new_card, write_card
from nbmlops.core.registry.context import is_not_found
from nbmlops.core.registry.names import check_model_name
from nbmlops.core.registry.records import RegisteredVersion
from nbmlops.core.registry.safety import files_digest, inspect_model_dir
from nbmlops.core.registry.scan import scan_model_dir
from nbmlops.core.registry.training import training_data, training_rows
from nbmlops.exceptions import AlreadyRegistered, ModelNotFound, NbmlopsError, UsageError

if TYPE_CHECKING:
    from nbmlops.core.registry.context import RegistryContext

__all__ = ["register"]

_MODEL_ID_RE = re.compile(r"m-[0-9a-f]{32}")
_RUN_ID_RE = re.compile(r"[0-9a-f]{32}")
_SOURCE_FIX = (
    "Give a notebook variable a %%track cell bound a fitted model to, runs:/RUN_ID/NAME, "
    "or a logged model id m-... ."
)


def resolve_source(ctx: RegistryContext, source: str) -> tuple[Any, str | None]:
    """(LoggedModel, lineage node or None) for a notebook variable, ``runs:/ID/NAME``,
    ``models:/m-...`` or a logged model id ``m-...``."""
    graph = ctx.graph()
    if not isinstance(source, str) or not source.strip():
        raise UsageError("Say what to register", fix=_SOURCE_FIX)
    source = source.strip()
    logged = None
    if source.startswith("runs:/"):
        run_id, _, mname = source.removeprefix("runs:/").partition("/")
        if not _RUN_ID_RE.fullmatch(run_id) or not re.fullmatch(r"[A-Za-z0-9_.-]+", mname):
            raise UsageError(f"Invalid model URI {source!r}", fix=_SOURCE_FIX)
        try:
            run = ctx.client.get_run(run_id)
        except Exception as err:
            if not is_not_found(err):
                raise
            raise ModelNotFound(f"No run {run_id}", fix=_SOURCE_FIX) from None
        found = ctx.client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run_id}' AND name = '{mname}'",
        )
        ready = [m for m in found if str(m.status).rsplit(".", 1)[-1] == "READY"]
        if not ready:
            raise ModelNotFound(
                f"Run {run_id} has no logged model named {mname!r}",
                fix="Check the run's Logged models tab in the MLflow UI, or give the "
                "model id (m-...).",
            )
        logged = max(ready, key=lambda m: m.creation_timestamp or 0)
    elif source.startswith(("m-", "models:/m-")):
        model_id = source.removeprefix("models:/")
        if not _MODEL_ID_RE.fullmatch(model_id):
            raise UsageError(f"Invalid logged model id {model_id!r}", fix=_SOURCE_FIX)
        try:
            logged = ctx.client.get_logged_model(model_id)
        except Exception as err:
            if not is_not_found(err):
                raise
            raise ModelNotFound(f"No logged model {model_id}", fix=_SOURCE_FIX) from None
    elif source.isidentifier():
        node = graph.latest_model(source)
        found_id = graph.graph.nodes[node].get("model_id") if node else None
        if node is None or not found_id:
            why = (
                "no tracked cell has bound a model to it"
                if node is None
                else "its model was not logged to MLflow"
            )
            raise ModelNotFound(
                f"Cannot register variable {source!r}: {why} (only runs already "
                "shipped to MLflow appear in the lineage)",
                fix="Fit the model in a %%track cell (or nbmlops.track block) first, or "
                "give runs:/RUN_ID/NAME or a logged model id m-....",
            )
        logged = ctx.client.get_logged_model(found_id)
        return logged, node
    else:
        raise UsageError(f"Cannot register {source!r}", fix=_SOURCE_FIX)
    node = None
    try:
        node = graph.resolve(logged.model_id)
    except NbmlopsError:
        node = None  # logged outside a tracked cell: no lineage
    return logged, node


def register(
    ctx: RegistryContext,
    source: str,
    name: str,
    *,
    holdout: str | None = None,
    target: str | None = None,
    intended_use: str | None = None,
    limitations: str | None = None,
    description: str | None = None,
    namespace: dict[str, Any] | None = None,
) -> RegisteredVersion:
    """Register a logged model as a new version of ``name``.

    ``source``: a notebook variable a tracked cell bound a model to (its latest logged
    model in the lineage), ``runs:/RUN_ID/NAME``, or a logged model id ``m-...``.
    The model folder is checked (structure: refused when unsafe, before anything is
    registered or imported) and scanned; the version is tagged with its run, data
    versions, metrics, git commit, files digest and scan verdict; a model card is logged.
    ``holdout``/``target``: a data version with its target column for the card's
    permutation importance (else the training data when ``namespace``, the notebook's
    variables, or the data store holds it; else the logged input example, indicative only).
    """
    name = check_model_name(name)
    ctx.require(name, "developer", "register a version")
    if (holdout is None) != (target is None):
        raise UsageError(
            "holdout and target go together",
            fix="Pass both --holdout NAME@k and --target COLUMN, or neither.",
        )
    ctx.ensure_store()
    user = ctx.user
    with ctx.store(f"register a version of {name}"):
        holdout_xy = ctx.holdout_xy(holdout, target) if holdout and target else None
        logged, node = resolve_source(ctx, source)
        status = str(logged.status).rsplit(".", 1)[-1]
        if status != "READY":
            raise UsageError(
                f"Logged model {logged.model_id} is {status}, not READY",
                fix="Only a completely logged model can be registered.",
            )
        run_id = logged.source_run_id
        if not run_id:
            raise UsageError(
                f"Logged model {logged.model_id} has no source run to keep its model card "
                "and scan report in",
                fix="Log the model within a run (a %%track cell does) and register that.",
            )
        refuse_if_registered(ctx, name, logged.model_id, source)  # before the slow part
        run = ctx.client.get_run(run_id)
        graph = ctx.graph()
        note = (run.data.tags or {}).get("mlflow.note.content", "")
        trained = training_data(graph, node, note.removeprefix("```python\n").removesuffix("\n```"))
        data_versions, digests, upstream = trained.versions, trained.digests, trained.upstream
        rows = None if holdout_xy else training_rows(trained, namespace, graph.data_store)
        with tempfile.TemporaryDirectory(prefix="nbmlops-register-") as tmp:
            local = ctx.download(logged.artifact_location, tmp)
            # Structure first: a model leaving its folder or naming an undeclared loader
            # is refused here, before it is registered and before anything is imported.
            inspect_model_dir(local, ctx.settings.trusted_loader_modules)
            digest = files_digest(local)
            report = scan_model_dir(
                local, ctx.settings.registry.scan, ctx.settings.trusted_loader_modules
            )
            card = new_card(name, logged, run, user, description)
            card.data_versions, card.data_digests = data_versions, digests
            card.upstream_data_versions = upstream
            card.training_data = [t.to_dict() for t in trained.sets]
            card.data_gaps = list(trained.gaps)
            card.intended_use = (intended_use or "").strip()
            card.limitations = (limitations or "").strip()
            card.scan_status, card.scan_summary = report.status, report.summary()
            images = card_images(card, local, report, graph, node, holdout, holdout_xy, rows)
        tags = {
            "nbmlops.run_id": run_id or "",
            "nbmlops.model_id": logged.model_id,
            "nbmlops.registered_by": user,
            "nbmlops.files_digest": digest,
            "nbmlops.data_versions": ", ".join(data_versions),
            "nbmlops.data_digests": ", ".join(digests),
            "nbmlops.upstream_data_versions": ", ".join(upstream),
            "nbmlops.metrics": json.dumps(card.metrics, sort_keys=True),
            "nbmlops.git_commit": card.git_commit or "",
            "nbmlops.scan": report.status,
            "nbmlops.scan.summary": "; ".join(report.summary())[:4000],
        }
        with ctx.lock(name):  # check and create as one step: a double click makes one version
            refuse_if_registered(ctx, name, logged.model_id, source)
            created_model, mv = create_version(ctx, name, logged, run_id, tags, description)
        version = int(mv.version)
        card.version = version
        try:
            card_uri = write_card(ctx, card, images, report, run_id)
            version_tags = card_tags(card, card_uri)
            for key, value in version_tags.items():
                ctx.client.set_model_version_tag(name, str(version), key, value)
            tags.update(version_tags)
            ctx.audit.append(
                "model.register",
                f"models:/{name}/{version}",
                user=user,
                details={
                    "source": source,
                    "run_id": run_id,
                    "model_id": logged.model_id,
                    "files_digest": digest,
                    "data_versions": data_versions,
                    "scan": report.status,
                    "card_complete": card.complete,
                },
            )
        except BaseException:
            undo_version(ctx, name, version, created_model)
            raise
    return RegisteredVersion(
        name=name,
        version=version,
        run_id=run_id or "",
        model_id=logged.model_id,
        source=logged.artifact_location,
        files_digest=digest,
        scan=report,
        card=card,
        card_uri=card_uri,
        data_versions=data_versions,
        tags=tags,
        data_summary=trained.summary(),
        data_gaps=list(trained.gaps),
    )


def refuse_if_registered(ctx: RegistryContext, name: str, model_id: str, source: str) -> None:
    """Raise AlreadyRegistered when logged model ``model_id`` is already a version of ``name``:
    registering is idempotent, one logged model makes one version."""
    try:
        versions = ctx.all_versions(name)
    except Exception as err:
        if is_not_found(err):
            return
        raise
    same = [
        int(v.version)
        for v in versions
        if getattr(v, "model_id", None) == model_id
        or (v.tags or {}).get("nbmlops.model_id") == model_id
    ]
    if same:
        version = min(same)
        raise AlreadyRegistered(
            f"{source} (logged model {model_id}) is already version {version} of {name}; "
            "nothing was registered",
            name=name,
            version=version,
            fix=f"Use models:/{name}/{version}, or log a new model to register a new version.",
        )


def create_version(
    ctx: RegistryContext,
    name: str,
    logged: Any,
    run_id: str | None,
    tags: dict[str, str],
    description: Any,
) -> tuple[bool, Any]:
    from mlflow.exceptions import MlflowException

    created = False
    try:
        ctx.client.create_registered_model(name)
        created = True
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    try:
        # source = the logged model's artifact location (not models:/m-...: MLflow's SQL
        # registry resolves that through the *global* tracking URI, not this client's).
        mv = ctx.client.create_model_version(
            name,
            source=logged.artifact_location,
            run_id=run_id,
            tags=tags,
            description=description,
            await_creation_for=0,
            model_id=logged.model_id,
        )
    except BaseException:
        if created:
            with contextlib.suppress(Exception):
                ctx.client.delete_registered_model(name)
        raise
    return created, mv


def undo_version(ctx: RegistryContext, name: str, version: int, created_model: bool) -> None:
    with contextlib.suppress(Exception):
        ctx.client.delete_model_version(name, str(version))
    if created_model:
        with contextlib.suppress(Exception):
            if not ctx.all_versions(name):
                ctx.client.delete_registered_model(name)


# -- the card -------------------------------------------------------------------------
