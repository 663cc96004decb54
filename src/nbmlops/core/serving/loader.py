"""Resolve ``NAME@alias`` / ``NAME@VERSION`` in the MLflow registry, fetch, check, load.

A version's files are downloaded once to ``<home>/serving-cache/<name>/<version>`` (through a
temporary folder renamed into place, so a half-downloaded copy is never used). Before anything
in them is imported, :func:`~nbmlops.core.registry.safety.inspect_model_dir` refuses paths
leaving the folder and undeclared loader modules, and
:func:`~nbmlops.core.registry.safety.verify_files` compares the files with the digest recorded
at registration (version tag ``nbmlops.files_digest``). The cached copy is checked again on
every load, so a file changed in the cache is refused too.

Only then is the model loaded with ``mlflow.pyfunc.load_model``. For scikit-learn models the
gateway calls the estimator's own ``predict`` on a DataFrame it already checked against the
signature (pyfunc's ``predict`` would check the schema again and convert the output, which
costs more than the prediction itself for one row); ``direct=False`` keeps pyfunc's path.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from nbmlops.core.registry.safety import inspect_model_dir, verify_files
from nbmlops.core.serving.errors import (
    BadModelSpec,
    ModelLoadError,
    ModelNotFoundError,
    ServingError,
)
from nbmlops.core.serving.schema import InputSchema, ValidatedInput, validate_payload
from nbmlops.exceptions import NbmlopsError, UnsafeModelError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nbmlops.config import Settings

log = logging.getLogger("nbmlops.serving")

DIGEST_TAG = "nbmlops.files_digest"
SCAN_TAG = "nbmlops.scan"
REGISTERED_MODEL_META = "registered_model_meta"
DEFAULT_ALIAS = "champion"
_ALIAS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class ModelRef:
    """A registered model and which version of it: an alias (followed) or a fixed number."""

    name: str
    alias: str | None = None
    version: int | None = None

    @property
    def follows_alias(self) -> bool:
        return self.alias is not None

    def __str__(self) -> str:
        return f"{self.name}@{self.alias if self.alias is not None else self.version}"

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """``NAME@alias``, ``NAME@3``, ``models:/NAME@alias``, ``models:/NAME/3`` or ``NAME``
        (which means ``NAME@champion``)."""
        spec = text.strip()
        if spec.startswith("models:/"):
            spec = spec.removeprefix("models:/")
            if "@" not in spec and "/" in spec:
                spec = spec.replace("/", "@", 1)
        name, sep, which = spec.rpartition("@")
        if not sep:
            name, which = spec, DEFAULT_ALIAS
        if not name or not which or "/" in name:
            raise BadModelSpec(
                f"Cannot read the model spec {text!r}",
                fix="Write NAME@alias (e.g. churn@champion) or NAME@VERSION (e.g. churn@3).",
            )
        if which.isdigit():
            return cls(name, version=int(which))
        if not _ALIAS_RE.match(which):
            raise BadModelSpec(
                f"{which!r} in {text!r} is neither a version number nor an alias",
                fix="Aliases are letters, digits, '_' and '-', starting with a letter.",
            )
        return cls(name, alias=which)


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


@dataclass(frozen=True)
class ResolvedVersion:
    """What the registry says a ref points at now."""

    name: str
    version: int
    tags: dict[str, str]
    source: str = ""
    run_id: str | None = None


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
    pyfunc: Any = field(default=None, repr=False)
    _call_array: Callable[[Any], Any] | None = field(default=None, repr=False)
    requirement_mismatches: list[str] = field(default_factory=list)
    loaded_at: float = field(default_factory=time.time)

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


def _no_progress_bar() -> contextlib.AbstractContextManager[None]:
    from nbmlops.core.tracking.store import quiet_artifact_downloads

    return quiet_artifact_downloads()


def preload_model_libraries() -> None:
    """Import ``skops.io`` before MLflow is imported, when it is installed.

    MLflow 3 saves scikit-learn models with skops, and skops computes its trusted types at
    import time by looking for each numpy/scipy ufunc in every loaded module. After
    ``import mlflow`` (some 1,500 modules) that search costs 2-4 s more than before it, so
    ``nbmlops serve`` calls this first thing. It does nothing once mlflow is imported.
    """
    if "mlflow" in sys.modules or "skops.io" in sys.modules:
        return
    if importlib.util.find_spec("skops") is None:
        return
    importlib.import_module("skops.io")


def _safe_segment(name: str) -> str:
    """A registered model name as one folder name (no separators, no '..')."""
    seg = quote(name, safe="")
    return "%2E" + seg[1:] if seg.startswith(".") else seg


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


class ModelLoader:
    """Resolves refs against one MLflow registry and loads versions through a local cache."""

    def __init__(self, settings: Settings, *, direct: bool = True):
        self.settings = settings
        self.direct = direct
        self.cache_root = settings.home_dir / "serving-cache"
        self._client: MlflowClient | None = None

    @property
    def tracking_uri(self) -> str:
        from nbmlops.core.tracking.store import normalize_uri

        return normalize_uri(self.settings.resolved_tracking_uri)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    # --- the registry ------------------------------------------------------------------------
    def resolve(self, ref: ModelRef) -> ResolvedVersion:
        """The version ``ref`` points at now; ModelNotFoundError lists what exists."""
        from mlflow.exceptions import MlflowException

        try:
            if ref.alias is not None:
                mv = self.client.get_model_version_by_alias(ref.name, ref.alias)
            else:
                mv = self.client.get_model_version(ref.name, str(ref.version))
        except MlflowException as err:
            if getattr(err, "error_code", "") in (
                "RESOURCE_DOES_NOT_EXIST",
                "INVALID_PARAMETER_VALUE",
            ):
                raise self._not_found(ref) from None
            raise ServingError(
                f"Cannot read {ref} from the model registry: {err.message}",
                where=self.settings.resolved_tracking_uri,
                fix="Check that the tracking store is reachable (nbmlops status).",
            ) from None
        return ResolvedVersion(
            name=mv.name,
            version=int(mv.version),
            tags=dict(mv.tags or {}),
            source=str(mv.source or ""),
            run_id=mv.run_id,
        )

    def _not_found(self, ref: ModelRef) -> ModelNotFoundError:
        where = self.settings.resolved_tracking_uri
        try:
            rm = self.client.get_registered_model(ref.name)
        except Exception:
            try:
                names = sorted(m.name for m in self.client.search_registered_models(max_results=20))
            except Exception:
                names = []
            return ModelNotFoundError(
                f"No registered model {ref.name!r}",
                where=where,
                fix=f"Registered models: {', '.join(names)}." if names else "Register one first.",
            )
        try:
            quoted = ref.name.replace("'", "\\'")
            found = self.client.search_model_versions(f"name = '{quoted}'", max_results=200)
            versions = sorted(int(v.version) for v in found)
        except Exception:
            versions = []
        aliases = ", ".join(f"@{a} -> {v}" for a, v in sorted((rm.aliases or {}).items()))
        what = (
            f"Model {ref.name!r} has no alias {ref.alias!r}"
            if ref.alias is not None
            else f"Model {ref.name!r} has no version {ref.version}"
        )
        return ModelNotFoundError(
            what,
            where=where,
            fix=f"Versions: {', '.join(map(str, versions)) or 'none'}; aliases: "
            f"{aliases or 'none'}. Serve one of them, e.g. {ref.name}@{versions[-1] if versions else 1}.",
        )

    # --- files -------------------------------------------------------------------------------
    def _check(self, path: Path, resolved: ResolvedVersion) -> bool:
        """Scan verdict, structure, then digest; True when a recorded digest was verified."""
        if resolved.tags.get(SCAN_TAG) == "flagged":
            raise UnsafeModelError(
                f"{resolved.name} version {resolved.version} was flagged by the registry's "
                f"security scan ({resolved.tags.get(SCAN_TAG + '.summary', 'see its model card')})",
                fix="Serve a version that passed the scan.",
            )
        inspect_model_dir(path, self.settings.trusted_loader_modules)
        expected = resolved.tags.get(DIGEST_TAG)
        verify_files(path, expected)
        return expected is not None

    def fetch(self, resolved: ResolvedVersion) -> tuple[Path, bool]:
        """The checked local folder of a version (downloaded once); (path, digest_verified)."""
        folder = self.cache_root / _safe_segment(resolved.name)
        final = folder / str(resolved.version)
        if final.is_dir():
            return final, self._check(final, resolved)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".download-{uuid.uuid4().hex}"
        try:
            import mlflow.artifacts

            # download_artifacts("models:/NAME/VERSION") resolves the name with the
            # process-wide registry URI, whatever registry_uri it is given (MLflow 3.17), so
            # the version's own artifact location is looked up with our client instead.
            source = self.client.get_model_version_download_uri(
                resolved.name, str(resolved.version)
            )
            with _no_progress_bar():
                local = Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=source,
                        dst_path=str(tmp),
                        tracking_uri=self.tracking_uri,
                        registry_uri=self.tracking_uri,
                    )
                )
        except Exception as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelLoadError(
                f"Cannot download {resolved.name} version {resolved.version}: {err}",
                where=self.settings.resolved_tracking_uri,
                fix="Check that the version's artifacts exist and are readable.",
            ) from None
        try:
            # MLflow writes this YAML (name and version) into a *local* artifact folder whenever
            # someone downloads a models:/ URI of it, i.e. after registration: it is not part
            # of the registered files, and nothing loads it.
            (local / REGISTERED_MODEL_META).unlink(missing_ok=True)
            verified = self._check(local, resolved)  # nothing unchecked ever sits at `final`
            try:
                os.replace(local, final)
            except OSError:  # another process put it there first: use (and check) theirs
                return final, self._check(final, resolved)
            return final, verified
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # --- loading -----------------------------------------------------------------------------
    def load(self, ref_or_version: ModelRef | ResolvedVersion) -> ServedModel:
        """Resolve (if needed), fetch, check, load and warm up a model version."""
        resolved = (
            self.resolve(ref_or_version) if isinstance(ref_or_version, ModelRef) else ref_or_version
        )
        began = time.perf_counter()
        path, verified = self.fetch(resolved)
        import yaml

        mlmodel = yaml.safe_load((path / "MLmodel").read_text(encoding="utf-8")) or {}
        schema = InputSchema.from_mlmodel(mlmodel)
        mismatches = _requirement_mismatches(path)
        for item in mismatches:
            log.warning("%s v%s requires %s", resolved.name, resolved.version, item)
        try:
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
        call, flavor = self._predictor(pyfunc_model, mlmodel)
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
        )
        self._warm_up(model)
        if flavor == "sklearn":
            model._call_array = self._array_predictor(model, mlmodel)
        model.load_seconds = time.perf_counter() - began
        return model

    def _predictor(
        self, pyfunc_model: Any, mlmodel: dict[str, Any]
    ) -> tuple[Callable[[Any], Any], str]:
        conf = (mlmodel.get("flavors") or {}).get("python_function") or {}
        impl = getattr(pyfunc_model, "_model_impl", None)
        estimator = getattr(impl, "sklearn_model", None)
        if self.direct and conf.get("loader_module") == "mlflow.sklearn" and estimator is not None:
            fn = getattr(estimator, conf.get("predict_fn") or "predict", None)
            if callable(fn):
                return fn, "sklearn"
        return pyfunc_model.predict, "pyfunc"

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
        estimator = getattr(getattr(model.pyfunc, "_model_impl", None), "sklearn_model", None)
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
        example = getattr(model.pyfunc, "input_example", None)
        if example is not None and hasattr(example, "to_dict"):
            candidates.append(example.to_dict(orient="records"))
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
