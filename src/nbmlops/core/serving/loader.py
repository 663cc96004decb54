"""Resolve ``NAME@alias`` / ``NAME@VERSION`` in the MLflow registry, fetch, check, load.

The registry is asked through a :class:`~nbmlops.core.serving.registry.ModelRegistry`:
MLflow's client in this process, or (for the gateway) its registry helper process.
A version's files are downloaded once to ``<home>/serving-cache/<name>/<version>`` (through a
temporary folder renamed into place, so a half-downloaded copy is never used); see
:mod:`~nbmlops.core.serving.cache`. Before anything in them is imported,
:func:`~nbmlops.core.registry.safety.inspect_model_dir` refuses paths leaving the folder and
undeclared loader modules, :func:`~nbmlops.core.registry.safety.verify_files` compares the
files with the digest recorded at registration (version tag ``nbmlops.files_digest``), and
the registry's scanner (:func:`~nbmlops.core.registry.scan.scan_model_dir`, its allow list of
what a pickle or skops file may load) reads the very files about to be loaded. That scan runs
whatever the version's tags say: a version made straight in MLflow has no verdict and no
digest, and whoever can write versions to the store can write tags too, so a ``clean`` tag is
no reason to unpickle anything. A ``flagged`` tag refuses the version before it is fetched. A
copy the scan passed is recorded in the cache with its files digest, so a restart does not
scan it again. The cached copy is checked again on every load; a copy that fails is thrown
away and fetched again, and the fresh copy must pass.

Only then is the model loaded. A scikit-learn model (``mlflow.sklearn`` flavour, no code
paths) is loaded as ``mlflow.sklearn`` loads it (skops, pickle or cloudpickle, with the
model's declared skops trusted types and MLflow's ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``
switch) but without importing MLflow, which costs a second of start-up; the gateway then
calls the estimator's own ``predict`` on a DataFrame it already checked against the
signature (pyfunc's ``predict`` would check the schema again and convert the output, which
costs more than the prediction itself for one row). Every other model, and every model when
``direct=False``, is loaded with ``mlflow.pyfunc.load_model`` and predicts through it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.core.registry.safety import inspect_model_dir, verify_files
from nbmlops.core.serving.cache import ServingCache
from nbmlops.core.serving.errors import BadModelSpec, ModelLoadError
from nbmlops.core.serving.registry import (
    DEFAULT_ALIAS,
    MlflowRegistry,
    ModelRef,
    ModelRegistry,
    RegistryWorker,
    ResolvedVersion,
)
from nbmlops.core.serving.schema import InputSchema, ValidatedInput, validate_payload
from nbmlops.exceptions import NbmlopsError, UnsafeModelError

if TYPE_CHECKING:
    from nbmlops.config import Settings

__all__ = [
    "DEFAULT_ALIAS",
    "ModelLoader",
    "ModelRef",
    "ResolvedVersion",
    "ServedModel",
    "parse_weighted",
    "preload_model_libraries",
    "start_registry_helper",
]

log = logging.getLogger("nbmlops.serving")

DIGEST_TAG = "nbmlops.files_digest"
SCAN_TAG = "nbmlops.scan"
SAFETY_TAGS = (DIGEST_TAG, SCAN_TAG)
REGISTERED_MODEL_META = "registered_model_meta"


def parse_weighted(text: str) -> tuple[ModelRef, float]:
    """``NAME@alias:10`` -> (ref, 10.0): a canary and its share of traffic in percent."""
    spec, sep, pct = text.rpartition(":")
    if not sep or not spec:
        raise BadModelSpec(
            f"The canary {text!r} has no traffic share",
            fix="Write NAME@alias:PERCENT, e.g. churn@challenger:10.",
        )
    try:
        percent = float(pct)
    except ValueError:
        raise BadModelSpec(
            f"{pct!r} in {text!r} is not a percentage", fix="Write e.g. churn@challenger:10."
        ) from None
    if not 0 < percent < 100:
        raise BadModelSpec(
            f"The canary share {percent:g}% must be between 0 and 100", fix="E.g. :10 for 10%."
        )
    return ModelRef.parse(spec), percent


@dataclass
class ServedModel:
    """One loaded model version, ready to predict on checked input."""

    name: str
    version: int
    path: Path
    schema: InputSchema | None
    flavor: str  # "sklearn" when the estimator is called directly, else "pyfunc"
    digest_verified: bool
    load_seconds: float
    _call: Callable[[Any], Any] = field(repr=False)
    pyfunc: Any = field(default=None, repr=False)  # MLflow's PyFuncModel, when it loaded it
    _call_array: Callable[[Any], Any] | None = field(default=None, repr=False)
    requirement_mismatches: list[str] = field(default_factory=list)
    loaded_at: float = field(default_factory=time.time)
    estimator: Any = field(default=None, repr=False)  # the scikit-learn estimator, if any
    checked_tags: dict[str, str] = field(default_factory=dict)  # safety tags it was checked with
    input_example: list[dict[str, Any]] | None = field(default=None, repr=False)
    _proba_array: Callable[[Any], Any] | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.version)

    def validate(self, payload: Any) -> ValidatedInput:
        return validate_payload(payload, self.schema)

    def predict(self, rows: ValidatedInput) -> Any:
        """Predictions for checked rows, as JSON-ready Python values (one per row)."""
        if self._call_array is not None:
            return to_jsonable(self._call_array(rows.array()))
        return to_jsonable(self._call(rows.frame()))

    @property
    def has_probabilities(self) -> bool:
        """Whether the model is a classifier that gives class probabilities (predict_proba)."""
        est = self.estimator
        return est is not None and hasattr(est, "classes_") and hasattr(est, "predict_proba")

    def predict_proba(self, rows: ValidatedInput) -> dict[str, Any] | None:
        """``{"classes": [...], "p": [[...] one list a row]}`` of a classifier, else None."""
        if not self.has_probabilities:
            return None
        if self._proba_array is not None:
            p = self._proba_array(rows.array())
        else:
            p = self.estimator.predict_proba(rows.frame())
        return {"classes": to_jsonable(self.estimator.classes_), "p": to_jsonable(p)}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "flavor": self.flavor,
            "input": "array" if self._call_array is not None else "frame",
            "digest_verified": self.digest_verified,
            "loaded_at": self.loaded_at,
            "columns": list(self.schema.names) if self.schema else None,
        }


def to_jsonable(out: Any) -> Any:
    """Model output as lists/dicts of Python scalars."""
    if hasattr(out, "to_dict") and hasattr(out, "columns"):  # DataFrame
        return out.to_dict(orient="records")
    if hasattr(out, "tolist"):  # ndarray, Series
        return out.tolist()
    if isinstance(out, dict):
        return {k: to_jsonable(v) for k, v in out.items()}
    if isinstance(out, list | tuple):
        return [to_jsonable(v) for v in out]
    return out


def preload_model_libraries() -> None:
    """Import ``skops.io`` (and with it scikit-learn, scipy and pandas) before MLflow is
    imported, when it is installed.

    MLflow 3 saves scikit-learn models with skops, and skops computes its trusted types at
    import time by looking up each numpy/scipy ufunc in every loaded module, in import
    order, until it finds the module holding it. After ``import mlflow`` (some 1,500
    modules) that search costs 2-4 s more than before it, so ``nbmlops serve`` calls this
    before it imports MLflow (it never does, for scikit-learn models) or the gateway's own
    modules. numpy and scipy.special go first: scikit-learn would import pandas (some 400
    modules) before them, and every search would walk past those (~0.1 s in all). It does
    nothing once mlflow is imported.
    """
    if "mlflow" in sys.modules or "skops.io" in sys.modules:
        return
    if importlib.util.find_spec("skops") is None:
        return
    for name in ("numpy", "scipy.special"):
        try:
            importlib.import_module(name)
        except ImportError:  # skops will say what is missing
            break
    importlib.import_module("skops.io")


def start_registry_helper(
    settings: Settings, refs: list[ModelRef], *, use_cache: bool = True
) -> RegistryWorker:
    """The registry helper a gateway on ``settings`` uses, started now, already asked about
    the refs the serving cache cannot answer. ``nbmlops serve`` calls it first thing, so the
    helper imports MLflow and asks while this process imports the models' libraries; the
    gateway then finds the answers waiting (see ``RegistryWorker.prefetch``)."""
    from nbmlops.core.tracking.store import normalize_uri

    uri = normalize_uri(settings.resolved_tracking_uri)
    worker = RegistryWorker.shared(uri, settings.resolved_tracking_uri)
    cache = ServingCache(settings.home_dir / "serving-cache", uri)
    for ref in refs:
        if not use_cache or cache.lookup(ref) is None:
            worker.prefetch(ref)  # the helper starts at full priority: someone waits
    return worker.start()  # no-op if it runs; else starts it at low priority


def _requirement_mismatches(path: Path) -> list[str]:
    """Pinned requirements (``pkg==x``) of the model that differ from what is installed.

    MLflow's own check maps every installed module to its package first (about a second);
    looking up only the named distributions is enough here.
    """
    req = path / "requirements.txt"
    if not req.is_file():
        return []
    found = []
    for line in req.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" not in line or line.startswith("-"):
            continue
        pkg, want = (s.strip() for s in line.split("==", 1))
        pkg = pkg.split("[", 1)[0]
        try:
            have = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{pkg}=={want} (not installed)")
            continue
        if have != want.split(";", 1)[0].strip():
            found.append(f"{pkg}=={want} (installed {have})")
    return found


def _pickles_allowed() -> bool:
    """MLflow's switch for deserialising models (skops included); on unless set false."""
    value = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true").strip().lower()
    return value not in ("false", "0")


def load_sklearn_estimator(path: Path, mlmodel: dict[str, Any]) -> Any | None:
    """The estimator of an ``mlflow.sklearn`` model folder, loaded the way
    ``mlflow.sklearn._load_pyfunc`` loads it, without importing MLflow.

    None when this is not such a model, or one MLflow would load differently (code paths,
    an unknown serialisation format, deserialisation switched off): pyfunc loads those. Call
    it only on a folder that passed :func:`~nbmlops.core.registry.safety.inspect_model_dir`.
    """
    flavors = mlmodel.get("flavors") or {}
    pyfunc_conf = flavors.get("python_function") or {}
    conf = flavors.get("sklearn") or {}
    if pyfunc_conf.get("loader_module") != "mlflow.sklearn" or not isinstance(conf, dict):
        return None
    if not conf or pyfunc_conf.get("code") or conf.get("code") or not _pickles_allowed():
        return None
    model_path = pyfunc_conf.get("model_path")
    fmt = conf.get("serialization_format", "pickle")
    if not isinstance(model_path, str) or fmt not in ("skops", "pickle", "cloudpickle"):
        return None
    file = path / model_path
    if not file.is_file():
        return None
    if fmt == "skops":
        import skops.io

        return skops.io.load(file, trusted=conf.get("skops_trusted_types"))
    with open(file, "rb") as f:
        if fmt == "cloudpickle":
            import cloudpickle

            return cloudpickle.load(f)
        import pickle

        # What mlflow.sklearn does for this format, on files checked against the digest
        # recorded at registration and scanned by the registry.
        return pickle.load(f)  # noqa: S301


def read_input_example(path: Path, mlmodel: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The model's saved DataFrame input example as records (MLflow's ``input_example``
    without MLflow); None when there is none or it is not a DataFrame."""
    info = mlmodel.get("saved_input_example_info") or {}
    if not isinstance(info, dict) or info.get("type") != "dataframe":
        return None
    rel = info.get("artifact_path")
    if not isinstance(rel, str) or not rel:
        return None
    file = (path / rel).resolve()
    if not file.is_relative_to(path.resolve()) or not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    orient = info.get("pandas_orient", "split")
    if orient == "split" and isinstance(data, dict):
        columns, rows = data.get("columns"), data.get("data")
        if isinstance(columns, list) and isinstance(rows, list):
            return [dict(zip(columns, row, strict=False)) for row in rows if isinstance(row, list)]
    if orient == "records" and isinstance(data, list):
        return [row for row in data if isinstance(row, dict)]
    return None


class CachedCopyUnusable(Exception):
    """The cache has no usable checked copy of a version (missing, or it failed a check)."""


class ModelLoader:
    """Resolves refs against one MLflow registry and loads versions through a local cache.

    ``registry`` answers the registry questions: MLflow's client in this process unless
    another is given (the gateway gives a :class:`~nbmlops.core.serving.registry.RegistryWorker`).
    """

    def __init__(
        self, settings: Settings, *, direct: bool = True, registry: ModelRegistry | None = None
    ):
        self.settings = settings
        self.direct = direct
        self.cache = ServingCache(settings.home_dir / "serving-cache", self.tracking_uri)
        self._registry = registry

    @property
    def tracking_uri(self) -> str:
        from nbmlops.core.tracking.store import normalize_uri

        return normalize_uri(self.settings.resolved_tracking_uri)

    @property
    def registry(self) -> ModelRegistry:
        if self._registry is None:
            self._registry = MlflowRegistry(
                self.tracking_uri, where=self.settings.resolved_tracking_uri
            )
        return self._registry

    # --- the registry ------------------------------------------------------------------------
    def prefetch(self, ref: ModelRef) -> None:
        """Ask the registry about ``ref`` now and read the answer on the next :meth:`resolve`
        (when the registry answers asynchronously; otherwise nothing happens)."""
        ask = getattr(self.registry, "prefetch", None)
        if ask is not None:
            ask(ref)

    def resolve(self, ref: ModelRef) -> ResolvedVersion:
        """The version ``ref`` points at now; ModelNotFoundError lists what exists."""
        return self.registry.resolve(ref)

    def cached(self, ref: ModelRef) -> ResolvedVersion | None:
        """What the registry said ``ref`` meant when it was last asked, if a checked copy of
        that version is in the cache."""
        return self.cache.lookup(ref)

    def remember(self, ref: ModelRef, resolved: ResolvedVersion) -> None:
        """Record the registry's answer for ``ref`` (for the next start-up)."""
        self.cache.remember(ref, resolved)

    # --- files -------------------------------------------------------------------------------
    def _refuse_flagged(self, resolved: ResolvedVersion) -> None:
        if resolved.tags.get(SCAN_TAG) == "flagged":
            raise UnsafeModelError(
                f"{resolved.name} version {resolved.version} was flagged by the registry's "
                f"security scan ({resolved.tags.get(SCAN_TAG + '.summary', 'see its model card')})",
                fix="Serve a version that passed the scan.",
            )

    def _check(self, path: Path, resolved: ResolvedVersion) -> bool:
        """Scan verdict tag, structure, digest, then the content scan of the files; True when
        a recorded digest was verified."""
        self._refuse_flagged(resolved)
        inspect_model_dir(path, self.settings.trusted_loader_modules)
        expected = resolved.tags.get(DIGEST_TAG)
        digest = verify_files(path, expected)
        self._scan(path, resolved, digest)
        return expected is not None

    @property
    def scan_policy(self) -> str:
        """Fingerprint of what the scan allows (built-in rules and this project's settings)."""
        from nbmlops.core.registry.allowlist import AllowList

        trusted = AllowList(self.settings.registry.scan.trusted_pickle_globals).fingerprint
        return f"{trusted}:{','.join(sorted(self.settings.trusted_loader_modules))}"

    def _scan(self, path: Path, resolved: ResolvedVersion, digest: str) -> None:
        """Scan the files before anything in them is imported (unless this cache's scan passed
        these very files under the same rules); UnsafeModelError with the reason if refused."""
        name, version, policy = resolved.name, resolved.version, self.scan_policy
        if self.cache.scan_passed(name, version, digest, policy):
            return
        from nbmlops.core.registry.scan import scan_model_dir

        report = scan_model_dir(
            path, self.settings.registry.scan, self.settings.trusted_loader_modules, audit=False
        )
        if not report.loadable:
            tagged = resolved.tags.get(SCAN_TAG)
            raise UnsafeModelError(
                f"{name} version {version} is refused by the security scan"
                + (f" (its tag says {tagged!r})" if tagged else " (it has no scan verdict)")
                + ": "
                + "; ".join(report.summary()),
                where=str(path),
                fix="Serve a version whose files pass the scan: register the model with "
                "nbmlops (save it with skops), then point the alias at that version.",
            )
        self.cache.write_scan_passed(name, version, digest, policy)

    def fetch(self, resolved: ResolvedVersion, *, offline: bool = False) -> tuple[Path, bool]:
        """The checked local folder of a version (downloaded once); (path, digest_verified).

        A cached copy that fails its check is thrown away and downloaded again; with
        ``offline`` (a start-up from the cache) CachedCopyUnusable is raised instead.
        """
        self._refuse_flagged(resolved)  # a verdict on the version, not on the copy
        final = self.cache.version_dir(resolved.name, resolved.version)
        if final.is_dir():
            try:
                verified = self._check(final, resolved)
            except UnsafeModelError as err:
                log.warning(
                    "the cached copy of %s version %s failed its check and is fetched again: %s",
                    resolved.name,
                    resolved.version,
                    err,
                )
                self.cache.discard(final)
                if offline:
                    raise CachedCopyUnusable(str(err)) from None
            else:
                if not offline:
                    self.cache.write_version(resolved)
                return final, verified
        elif offline:
            raise CachedCopyUnusable(f"no cached copy of {resolved.name} v{resolved.version}")
        return self._download(resolved, final)

    def _download(self, resolved: ResolvedVersion, final: Path) -> tuple[Path, bool]:
        tmp = self.cache.new_download_dir(resolved.name)
        try:
            try:
                local = self.registry.download(resolved.name, resolved.version, tmp)
            except NbmlopsError:
                raise
            except Exception as err:
                raise ModelLoadError(
                    f"Cannot download {resolved.name} version {resolved.version}: {err}",
                    where=self.settings.resolved_tracking_uri,
                    fix="Check that the version's artifacts exist and are readable.",
                ) from None
            # MLflow writes this YAML (name and version) into a *local* artifact folder whenever
            # someone downloads a models:/ URI of it, i.e. after registration: it is not part
            # of the registered files, and nothing loads it.
            (local / REGISTERED_MODEL_META).unlink(missing_ok=True)
            verified = self._check(local, resolved)  # nothing unchecked ever sits at `final`
            try:
                os.replace(local, final)
            except OSError:  # another process put it there first: use (and check) theirs
                verified = self._check(final, resolved)
            self.cache.write_version(resolved)
            return final, verified
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def reconfirm(self, model: ServedModel, resolved: ResolvedVersion) -> None:
        """The registry answered again for a loaded version: check its copy again if the
        version's safety tags (scan verdict, digest) changed since; raise if it fails."""
        fresh = {t: resolved.tags[t] for t in SAFETY_TAGS if t in resolved.tags}
        if fresh != model.checked_tags:
            model.digest_verified = self._check(model.path, resolved)
            model.checked_tags = fresh
        self.cache.write_version(resolved)

    # --- loading -----------------------------------------------------------------------------
    def load(
        self, ref_or_version: ModelRef | ResolvedVersion, *, offline: bool = False
    ) -> ServedModel:
        """Resolve (if needed), fetch, check, load and warm up a model version.

        ``offline``: a version taken from the cache's records, loaded without the registry
        (CachedCopyUnusable when its copy is missing or fails a check).
        """
        resolved = (
            self.resolve(ref_or_version) if isinstance(ref_or_version, ModelRef) else ref_or_version
        )
        began = time.perf_counter()
        path, verified = self.fetch(resolved, offline=offline)
        import yaml

        safe_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: same rules, faster
        mlmodel = yaml.load((path / "MLmodel").read_text(encoding="utf-8"), safe_loader) or {}
        schema = InputSchema.from_mlmodel(mlmodel)
        predict_fn = ((mlmodel.get("flavors") or {}).get("python_function") or {}).get(
            "predict_fn"
        ) or "predict"
        mismatches = _requirement_mismatches(path)
        for item in mismatches:
            log.warning("%s v%s requires %s", resolved.name, resolved.version, item)
        try:
            estimator = load_sklearn_estimator(path, mlmodel) if self.direct else None
            if estimator is not None and not callable(getattr(estimator, predict_fn, None)):
                estimator = None  # pyfunc says what is wrong with it
            pyfunc_model = None
            if estimator is None:
                import mlflow.pyfunc

                # suppress_warnings skips MLflow's requirement check (~1 s); ours is above.
                pyfunc_model = mlflow.pyfunc.load_model(str(path), suppress_warnings=True)
        except NbmlopsError:
            raise
        except Exception as err:
            raise ModelLoadError(
                f"Cannot load {resolved.name} version {resolved.version}: "
                f"{type(err).__name__}: {err}",
                where=str(path),
                fix="Load it with mlflow.pyfunc.load_model to see the full error; "
                "check the model's requirements."
                + (f" Mismatched: {'; '.join(mismatches)}." if mismatches else ""),
            ) from None
        call, flavor, estimator = self._predictor(pyfunc_model, estimator, mlmodel)
        example = (
            read_input_example(path, mlmodel) if pyfunc_model is None else _example(pyfunc_model)
        )
        model = ServedModel(
            name=resolved.name,
            version=resolved.version,
            path=path,
            schema=schema,
            flavor=flavor,
            digest_verified=verified,
            load_seconds=0.0,
            _call=call,
            pyfunc=pyfunc_model,
            requirement_mismatches=mismatches,
            estimator=estimator,
            checked_tags={t: resolved.tags[t] for t in SAFETY_TAGS if t in resolved.tags},
            input_example=example,
        )
        self._warm_up(model)
        if flavor == "sklearn":
            model._call_array = self._array_predictor(model, mlmodel)
            # the same lean copy (checked above to answer as the DataFrame path does)
            lean = getattr(model._call_array, "__self__", None)
            model._proba_array = getattr(lean, "predict_proba", None) if lean else None
        model.load_seconds = time.perf_counter() - began
        return model

    def _predictor(
        self, pyfunc_model: Any, estimator: Any, mlmodel: dict[str, Any]
    ) -> tuple[Callable[[Any], Any], str, Any]:
        """(predict function, flavour, estimator): the estimator's own predict function when
        the gateway calls scikit-learn directly, else pyfunc's predict."""
        conf = (mlmodel.get("flavors") or {}).get("python_function") or {}
        if pyfunc_model is not None:
            estimator = getattr(getattr(pyfunc_model, "_model_impl", None), "sklearn_model", None)
        if self.direct and conf.get("loader_module") == "mlflow.sklearn" and estimator is not None:
            fn = getattr(estimator, conf.get("predict_fn") or "predict", None)
            if callable(fn):
                return fn, "sklearn", estimator
        return pyfunc_model.predict, "pyfunc", estimator

    def _array_predictor(
        self, model: ServedModel, mlmodel: dict[str, Any]
    ) -> Callable[[Any], Any] | None:
        """The estimator's predict on a float64 array instead of a DataFrame, when that gives
        the same answers.

        For one row, scikit-learn spends ~400 us checking a DataFrame (dtypes per column,
        feature names) and ~100 us on an array. The names were already checked against the
        signature, so when the estimator was fitted on exactly the signature's columns in
        order, a shallow copy without ``feature_names_in_`` predicts on the array (without
        the "no feature names" warning). Used only if, on the warm-up rows, it answers
        exactly what the DataFrame path answers and warns about nothing; Pipelines and
        column transformers (which may select columns by name) keep the DataFrame.
        """
        import copy
        import warnings

        schema = model.schema
        estimator = model.estimator
        names = getattr(estimator, "feature_names_in_", None)
        if schema is None or not schema.numeric or names is None or estimator is None:
            return None
        if list(names) != list(schema.names) or hasattr(estimator, "steps"):
            return None
        if hasattr(estimator, "transformers") or hasattr(estimator, "estimators"):
            return None
        conf = (mlmodel.get("flavors") or {}).get("python_function") or {}
        lean = copy.copy(estimator)
        try:
            del lean.feature_names_in_
        except AttributeError:
            return None
        fn = getattr(lean, conf.get("predict_fn") or "predict", None)
        if not callable(fn):
            return None
        rows = self._warm_up_rows(model)
        if rows is None:
            return None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                same = to_jsonable(fn(rows.array())) == to_jsonable(model._call(rows.frame()))
        except Exception:
            return None
        return fn if same and not caught else None

    def _warm_up_rows(self, model: ServedModel) -> ValidatedInput | None:
        from nbmlops.core.serving.errors import InvalidInput

        for payload in self._warm_up_payloads(model):
            try:
                return model.validate(payload)
            except InvalidInput:
                continue
        return None

    def _warm_up_payloads(self, model: ServedModel) -> list[Any]:
        candidates: list[Any] = []
        if model.input_example:
            candidates.append(model.input_example)
        if model.schema is not None:
            zero = {"double": 0.0, "float": 0.0, "long": 0, "integer": 0, "boolean": False}
            candidates.append([{c.name: zero.get(c.type, "") for c in model.schema.columns}])
        return candidates

    def _warm_up(self, model: ServedModel) -> None:
        """One prediction before the model takes traffic: a version that cannot predict on
        its own input example (or a row of zeros) is refused here, not on a user's request."""
        rows = self._warm_up_rows(model)
        if rows is None:
            return  # no example the signature accepts: nothing to try
        try:
            model.predict(rows)
        except Exception as err:
            raise ModelLoadError(
                f"{model.name} version {model.version} failed its warm-up prediction: "
                f"{type(err).__name__}: {err}",
                where=str(model.path),
                fix="Check that the model predicts on its own input example.",
            ) from None


def _example(pyfunc_model: Any) -> list[dict[str, Any]] | None:
    """pyfunc's input example as records, when it is a DataFrame."""
    try:
        example = pyfunc_model.input_example
    except Exception:
        return None
    if example is not None and hasattr(example, "to_dict"):
        return example.to_dict(orient="records")
    return None
