"""Classify what a tracked block read and bound into params, metrics, models, data and figures.

The rules (documented in docs/capture.md) are deliberately simple so users can predict them:

* Never captured: names in ``ignore`` and names starting with ``_``.
* **params**: names the block assigns a literal (``C = 0.5``, ``layers = [64, 32]``); scalar
  values (numbers, strings, booleans, None) the block reads from earlier cells, papermill
  parameters included; ``--param k=v`` and ``--param NAME`` (forces NAME to be a param).
* **metrics**: names the block assigns a computed value that is a real number (int, float, numpy
  scalar; not bool); ``--metric NAME`` forces a name to be a metric; ``log_metric`` calls.
* **models**: fitted scikit-learn estimators and pipelines the block binds; their settings
  (``get_params``, nested estimators flattened) become params ``<name>.<setting>``.
* **data**: DataFrames, Series and arrays the block reads (inputs) or binds (outputs), by a
  digest of their full content.
* **figures**: matplotlib figures the block opens, saved when the block shows them
  (``plt.show()``, ``display``) or else when it ends.

Nothing here imports mlflow, sklearn or matplotlib unless the user's code already did.
"""

from __future__ import annotations

import io
import math
import numbers
import pickle
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.core.data.digest_framing import loaded_module
from nbmlops.core.data.hashing import digest_value, is_digestible
from nbmlops.core.tracking.analysis import CellAnalysis
from nbmlops.exceptions import UndigestibleError

MAX_PARAM_CHARS = 6000  # MLflow's limit for a param value
MAX_STR_INPUT_CHARS = 500  # longer strings read by a cell are data, not a param
EXAMPLE_ROWS = 5


@dataclass
class CaptureOptions:
    params: dict[str, str] = field(default_factory=dict)  # --param k=v
    force_params: set[str] = field(default_factory=set)  # --param NAME
    force_metrics: set[str] = field(default_factory=set)  # --metric NAME
    ignore: set[str] = field(default_factory=set)
    models: bool = True
    data: bool = True
    figures: bool = True


@dataclass
class DataRef:
    """A frame, series or array seen by the block, by digest."""

    name: str
    role: str  # "input" | "output"
    digest: str
    kind: str
    shape: list[int]
    schema: dict[str, str] | None
    nbytes: int
    context: str = "input"  # "training" when it was the X of a fit call

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Snapshot:
    """What we know before the block runs."""

    scalar_inputs: dict[str, Any] = field(default_factory=dict)
    data_inputs: dict[str, DataRef] = field(default_factory=dict)
    figure_ids: set[int] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    # figures saved when the block showed them (the inline backend closes them then); held
    # until the block ends, so no later figure can take the id of one shown and closed
    shown: list[tuple[Any, str]] = field(default_factory=list)


@dataclass
class Capture:
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    data: list[DataRef] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings_of: dict[str, int] = field(default_factory=dict)  # estimator -> settings recorded


def _skip(name: str, options: CaptureOptions) -> bool:
    return name.startswith("_") or name in options.ignore


def is_scalar(value: Any) -> bool:
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, numbers.Number) and not isinstance(value, complex):
        return True
    np = loaded_module("numpy", "generic")
    return bool(np is not None and isinstance(value, np.generic) and value.ndim == 0)


def as_metric(value: Any) -> float | None:
    """The value as a float if it is a real number and not a bool; else None."""
    if isinstance(value, bool):
        return None
    np = loaded_module("numpy", "floating")
    if np is not None and isinstance(value, np.bool_):
        return None
    if isinstance(value, numbers.Real) or (
        np is not None and isinstance(value, (np.integer, np.floating))
    ):
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            return None
    return None


def param_text(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    np = loaded_module("numpy", "generic")
    if np is not None and isinstance(value, np.generic):
        value = value.item()
    text = value if isinstance(value, str) else repr(value)
    if len(text) > MAX_PARAM_CHARS:
        text = text[: MAX_PARAM_CHARS - 15] + "...[truncated]"
    return text


def _data_ref(name: str, value: Any, role: str) -> DataRef:
    d = digest_value(value)
    return DataRef(name, role, d.digest, d.kind, list(d.shape), d.schema, d.nbytes)


def _looks_like_data(value: Any) -> bool:
    """A numpy/pandas container that ``is_digestible`` turned down: worth a note, not silence."""
    module = type(value).__module__.partition(".")[0]
    return module in ("numpy", "pandas") and hasattr(value, "shape")


def _open_figures() -> list[Any]:
    if "matplotlib.pyplot" not in sys.modules:
        return []
    from matplotlib._pylab_helpers import Gcf

    return [m.canvas.figure for m in Gcf.get_all_fig_managers()]


def snapshot_before(
    analysis: CellAnalysis, namespace: dict[str, Any], options: CaptureOptions
) -> Snapshot:
    """Record the block's inputs before it runs: scalar params and digests of data it reads."""
    snap = Snapshot()
    for name in analysis.reads:
        if _skip(name, options) or name not in namespace:
            continue
        value = namespace[name]
        if is_scalar(value):
            if isinstance(value, str) and len(value) > MAX_STR_INPUT_CHARS:
                continue
            snap.scalar_inputs[name] = value
        elif options.data and (is_digestible(value) or _looks_like_data(value)):
            try:
                snap.data_inputs[name] = _data_ref(name, value, "input")
            except UndigestibleError as err:
                snap.notes.append(f"input {name!r} not digested: {err.what}")
            except Exception as err:  # a broken object must never break the user's cell
                snap.notes.append(f"input {name!r} not digested: {type(err).__name__}: {err}")
    if options.figures:
        snap.figure_ids = {id(fig) for fig in _open_figures()}
    return snap


def is_fitted_estimator(value: Any) -> bool:
    base = loaded_module("sklearn.base", "BaseEstimator")
    if base is None or not isinstance(value, base.BaseEstimator) or isinstance(value, type):
        return False
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(value)
    except (NotFittedError, TypeError):
        return False
    except Exception:
        return False
    return True


def _setting_text(value: Any) -> str:
    """An estimator's setting as a param: nested estimators by class name (their own settings
    are flattened next to them), anything else as MLflow's autolog writes it."""
    base = loaded_module("sklearn.base", "BaseEstimator")
    if base is not None and isinstance(value, base.BaseEstimator):
        return type(value).__name__
    if isinstance(value, (list, tuple)) and all(
        isinstance(step, tuple) and len(step) >= 2 and isinstance(step[0], str) for step in value
    ):  # Pipeline.steps, ColumnTransformer.transformers
        return repr([(step[0], _setting_text(step[1]), *step[2:]) for step in value]).replace(
            '"', ""
        )
    return param_text(value)


def estimator_params(name: str, model: Any) -> dict[str, str]:
    """``get_params(deep=True)`` of a fitted estimator as params ``<name>.<setting>``: the
    settings of estimators nested in it (a pipeline's steps, a search's estimator) appear as
    ``<name>.<step>__<setting>``, as MLflow's sklearn autolog records them."""
    try:
        settings = model.get_params(deep=True)
    except Exception:  # a broken get_params must never break the user's cell
        return {}
    return {f"{name}.{key}": _setting_text(value) for key, value in sorted(settings.items())}


def _training_data(
    name: str, model: Any, analysis: CellAnalysis, namespace: dict[str, Any]
) -> tuple[str | None, Any]:
    """The data ``model`` was most likely fitted on: a ``.fit(X)`` argument of the block, else
    any 2-D frame or array the block saw with the model's number of features."""
    width = getattr(model, "n_features_in_", None)
    features = getattr(model, "feature_names_in_", None)

    def fits(value: Any) -> bool:
        shape = getattr(value, "shape", None)
        if not shape or len(shape) != 2 or shape[0] == 0:
            return False
        if width is not None and shape[1] != width:
            return False
        if features is not None:
            cols = getattr(value, "columns", None)
            return cols is not None and list(cols) == list(features)
        return True

    ordered = [x for r, x in analysis.fit_calls if r == name]
    ordered += [x for r, x in analysis.fit_calls if r != name]
    ordered += [n for n in [*analysis.reads, *analysis.assigned] if n not in ordered]
    for cand in ordered:
        value = namespace.get(cand)
        if value is not None and fits(value):
            return cand, value
    return None, None


def _head(value: Any, rows: int) -> Any:
    if hasattr(value, "iloc"):
        return value.iloc[:rows].copy()
    return value[:rows].copy()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80] or "figure"


def capture_after(
    analysis: CellAnalysis,
    snap: Snapshot,
    namespace: dict[str, Any],
    options: CaptureOptions,
    staging: Path | None,
) -> Capture:
    """Classify what the block bound; write models and figures to ``staging`` (None: dry run)."""
    cap = Capture(notes=list(snap.notes))
    # params: inputs first, so the block's own literal assignments and --param win
    for name, value in snap.scalar_inputs.items():
        if name in options.force_metrics and as_metric(value) is not None:
            cap.metrics[name] = as_metric(value)  # type: ignore[assignment]
        else:
            cap.params[name] = param_text(value)
    training_inputs: set[str] = set()
    for name in analysis.binds:
        if _skip(name, options) or name not in namespace:
            continue
        value = namespace[name]
        assigned = name in analysis.assigned
        metric = as_metric(value)
        if name in options.force_params and is_scalar(value):
            cap.params[name] = param_text(value)
        elif name in options.force_metrics and metric is not None:
            cap.metrics[name] = metric
        elif assigned and name in analysis.literals:
            cap.params[name] = param_text(analysis.literals[name])
        elif assigned and metric is not None:
            cap.metrics[name] = metric
        elif is_fitted_estimator(value):
            settings = estimator_params(name, value)
            for key, setting in settings.items():
                cap.params.setdefault(key, setting)
            cap.settings_of[name] = len(settings)
            if not options.models:
                continue
            entry = _stage_model(name, value, analysis, namespace, staging, cap)
            if entry is not None:
                cap.models.append(entry)
                if entry.get("trained_on"):
                    training_inputs.add(entry["trained_on"])
        elif options.data and assigned and is_digestible(value):
            try:
                cap.data.append(_data_ref(name, value, "output"))
            except Exception as err:
                cap.notes.append(f"output {name!r} not digested: {err}")
    for key, value in options.params.items():
        cap.params[key] = param_text(value)
    for ref in snap.data_inputs.values():
        if ref.name in training_inputs:
            ref.context = "training"
        cap.data.append(ref)
    cap.data.sort(key=lambda r: (r.role != "input", r.name))
    if options.figures:
        _stage_figures(snap, staging, cap)
    return cap


def _pickled(model: Any) -> tuple[bytes, list[str]]:
    """The model's pickle, and the classes and functions of the notebook (``__main__``) it
    names. A pickle names those by reference, so it loads only where the notebook's code runs;
    then the model is pickled by value with cloudpickle (MLflow's dependency) instead."""
    found: list[str] = []

    class Finder(pickle.Pickler):
        def persistent_id(self, obj: Any) -> None:
            if isinstance(obj, (type, types.FunctionType)) and obj.__module__ == "__main__":
                found.append(obj.__qualname__)
            return None

    buf = io.BytesIO()
    try:
        Finder(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(model)
    except (pickle.PicklingError, AttributeError, TypeError):
        if not found:  # not the notebook's code: the caller reports why it cannot pickle
            raise
    if not found:
        return buf.getvalue(), []
    import cloudpickle

    return cloudpickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL), sorted(set(found))


def _by_value_note(name: str, own_code: list[str]) -> str:
    names = ", ".join(own_code)
    return (
        f"model {name!r} uses {names}, defined in this notebook: it is logged by value "
        "(cloudpickle) and loads in a fresh Python process; the registry's scan refuses code "
        f"inside a model file, so to register or serve it, move {names} into a module (.py file) "
        "and fit it again"
    )


def _stage_model(
    name: str,
    model: Any,
    analysis: CellAnalysis,
    namespace: dict[str, Any],
    staging: Path | None,
    cap: Capture,
) -> dict[str, Any] | None:
    cls = type(model)
    entry: dict[str, Any] = {
        "name": name,
        "flavor": "sklearn",
        "class": f"{cls.__module__}.{cls.__qualname__}",
    }
    x_name, x_value = _training_data(name, model, analysis, namespace)
    if x_name is not None:
        entry["trained_on"] = x_name
    else:
        cap.notes.append(f"model {name!r}: no training data found, logged without a signature")
    if staging is None:
        return entry
    try:
        # The estimator is frozen now: a later cell may refit the same object before shipping.
        (staging / "models").mkdir(parents=True, exist_ok=True)
        model_file = staging / "models" / f"{name}.pkl"
        data, own_code = _pickled(model)
        model_file.write_bytes(data)
        entry["file"] = f"models/{name}.pkl"
        if own_code:
            entry["by_value"] = own_code
            cap.notes.append(_by_value_note(name, own_code))
        if x_value is not None:
            example_file = staging / "models" / f"{name}.example.pkl"
            example_file.write_bytes(pickle.dumps(_head(x_value, EXAMPLE_ROWS)))
            entry["example"] = f"models/{name}.example.pkl"
    except OSError as err:  # a full disk: a half-written pickle must not ship
        for partial in (staging / "models").glob(f"{name}.*pkl"):
            partial.unlink(missing_ok=True)
        cap.notes.append(f"model {name!r} not logged: cannot save it ({err.strerror or err})")
        return None
    except Exception as err:
        cap.notes.append(
            f"model {name!r} not logged: cannot pickle it ({type(err).__name__}: {err})"
        )
        return None
    return entry


def figure_shown(fig: Any, snap: Snapshot, staging: Path | None) -> None:
    """Save a figure the block shows now (``plt.show()``, ``display(fig)``): the inline
    backend closes it right after, before the block ends. Once per figure."""
    if id(fig) in snap.figure_ids or any(seen is fig for seen, _ in snap.shown):
        return
    stems = {rel.rsplit("/", 1)[-1][:-4] for _, rel in snap.shown}
    rel = _save_figure(fig, len(snap.shown) + 1, stems, staging, snap.notes)
    if rel is not None:
        snap.shown.append((fig, rel))


def _stage_figures(snap: Snapshot, staging: Path | None, cap: Capture) -> None:
    cap.figures = [rel for _, rel in snap.shown]
    seen = {rel.rsplit("/", 1)[-1][:-4] for rel in cap.figures}
    open_figures = [
        fig
        for fig in _open_figures()
        if id(fig) not in snap.figure_ids and not any(fig is shown for shown, _ in snap.shown)
    ]
    for i, fig in enumerate(open_figures, start=len(cap.figures) + 1):
        rel = _save_figure(fig, i, seen, staging, cap.notes)
        if rel is not None:
            cap.figures.append(rel)


def _save_figure(
    fig: Any, index: int, seen: set[str], staging: Path | None, notes: list[str]
) -> str | None:
    """Save ``fig`` as ``figures/<title>.png`` under ``staging`` (None: dry run); its path, or
    None with a note when it cannot be saved."""
    title = fig.get_label() or ""
    if not title and fig.axes:
        title = fig.axes[0].get_title()
    base = _slug(title) if title else f"figure-{index}"
    stem, n = base, 2
    while stem in seen:
        stem, n = f"{base}-{n}", n + 1
    seen.add(stem)
    rel = f"figures/{stem}.png"
    if staging is not None:
        try:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100)  # "tight" draws twice: 2x the cost
            out = staging / "artifacts" / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                out.write_bytes(buf.getvalue())
            except OSError:
                out.unlink(missing_ok=True)  # a half-written figure must not ship
                raise
        except Exception as err:
            notes.append(f"figure {stem!r} not saved: {type(err).__name__}: {err}")
            return None
    return rel
