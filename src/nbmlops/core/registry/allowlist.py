"""Which globals a model file may make Python load: an allow list, not a block list.

Unpickling a file imports every global (class or function) it names and may call it. A block
list of dangerous names cannot be complete (numpy, scipy, pandas and scikit-learn hold
helpers that run source code, spawn interpreters or unpickle a second file), so a model's
pickles and skops files may only name:

* **known reconstructors**: the exact functions that real pickles of arrays, data frames,
  random generators and fitted estimators call (``numpy._core.multiarray._reconstruct``,
  ``pandas._libs.internals._unpickle_block``, ...), the standard containers, and a few
  scikit-learn functions fitted models keep (score functions of feature selection, the
  metrics of scikit-learn's own scorers);
* **model classes**: classes defined in scikit-learn, numpy, scipy or pandas that are
  estimators or what estimators are made of: subclasses of ``BaseEstimator``, tree, loss,
  splitter and scorer classes, numpy scalar, dtype and random-generator types, sparse
  matrices, pandas frames, indexes and arrays. Any other class of those libraries is refused
  (``numpy.memmap`` creates files, ``scipy.stats`` distributions run source code kept in
  their state);
* **numpy ufuncs** (``numpy.log1p`` in a ``FunctionTransformer``);
* the exact ``module.name`` globals listed in ``registry.scan.trusted_pickle_globals``.

Deciding on a class means importing its module: only modules of those four libraries are
imported, never a ``__main__``, test or conftest module, and never anything from the model.
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import importlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

__all__ = ["ALLOWLIST_VERSION", "AllowList", "Verdict"]

ALLOWLIST_VERSION = 1  # bump when the rules change: cached verdicts are then redone

_BUILTINS = (
    "set frozenset slice range complex bytearray bytes dict list tuple int float str bool object"
)
# Exact globals (after Python 2 names are mapped as the unpickler maps them).
_EXACT = frozenset(
    {f"builtins.{n}" for n in _BUILTINS.split()}
    | {
        "_codecs.encode",  # bytes in protocol-2 pickles
        "copyreg._reconstructor",  # old-protocol objects: cls and base are globals too
        "functools.partial",  # wraps a callable that is itself a checked global
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.deque",
        "collections.Counter",
        "datetime.datetime",
        "datetime.date",
        "datetime.time",
        "datetime.timedelta",
        "datetime.timezone",
        "decimal.Decimal",
        "fractions.Fraction",
        # numpy arrays, scalars, masked arrays and random generators
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
        "numpy._core.numeric._frombuffer",
        "numpy.ma.core._mareconstruct",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
        # pandas frames, series, indexes, blocks, timestamps
        "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked",
        "pandas._libs.internals._unpickle_block",
        "pandas._libs.tslibs.timestamps._unpickle_timestamp",
        "pandas._libs.tslibs.timedeltas._timedelta_unpickle",
        "pandas.core.indexes.base._new_Index",
        "pandas.core.indexes.datetimes._new_DatetimeIndex",
        "pandas.core.indexes.interval._new_IntervalIndex",
        "pandas.core.indexes.period._new_PeriodIndex",
        "pandas.core.internals.blocks.new_block",
        # scikit-learn functions fitted models keep
        "sklearn.utils.validation.check_array",  # HistGradientBoosting's categorical encoder
        "sklearn.metrics._dist_metrics.newObj",  # Cython re-creation of distance metrics
        "sklearn.neighbors._kd_tree.newObj",
        "sklearn.neighbors._ball_tree.newObj",
        "sklearn.feature_selection._univariate_selection.f_classif",
        "sklearn.feature_selection._univariate_selection.f_regression",
        "sklearn.feature_selection._univariate_selection.r_regression",
        "sklearn.feature_selection._univariate_selection.chi2",
        "sklearn.feature_selection._univariate_selection.f_oneway",
        "sklearn.feature_selection._mutual_info.mutual_info_classif",
        "sklearn.feature_selection._mutual_info.mutual_info_regression",
    }
)
# Libraries whose classes are looked at (their modules may be imported to decide).
LIBRARIES = ("sklearn", "numpy", "scipy", "pandas")
# Base classes (per library) of the classes a model may hold; missing ones (other library
# versions) are skipped.
_BASES = {
    "sklearn": (
        "sklearn.base.BaseEstimator",
        "sklearn.tree._tree.Tree",
        "sklearn.neighbors._kd_tree.BinaryTree64",
        "sklearn.neighbors._ball_tree.BinaryTree64",
        "sklearn.metrics._dist_metrics.DistanceMetric",
        "sklearn._loss.loss.BaseLoss",
        "sklearn._loss.link.BaseLink",
        "sklearn._loss.link.Interval",
        "sklearn._loss._loss.CyLossFunction",
        "sklearn.linear_model._sgd_fast.LossFunction",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.model_selection._split.BaseCrossValidator",
        "sklearn.model_selection._split.BaseShuffleSplit",
        "sklearn.model_selection._split._RepeatedSplits",
        "sklearn.model_selection._split._CVIterableWrapper",
        "sklearn.metrics._scorer._BaseScorer",
        "sklearn.metrics._scorer._PassthroughScorer",
        "sklearn.metrics._scorer._MultimetricScorer",
        "sklearn.compose._column_transformer.make_column_selector",
        "sklearn.neural_network._stochastic_optimizers.BaseOptimizer",
        "sklearn.gaussian_process.kernels.Kernel",
        "sklearn.gaussian_process.kernels.Hyperparameter",
        "sklearn.utils._bunch.Bunch",
    ),
    "numpy": (
        "numpy.generic",  # scalar types
        "numpy.dtype",  # dtype and its classes
        "numpy.random.bit_generator.BitGenerator",
        "numpy.random.bit_generator.SeedSequence",
        "numpy.random.mtrand.RandomState",
        "numpy.random._generator.Generator",
    ),
    "scipy": ("scipy.sparse._base._spbase",),  # sparse matrices and arrays
    "pandas": (
        "pandas.core.generic.NDFrame",
        "pandas.core.indexes.base.Index",
        "pandas.core.arrays.base.ExtensionArray",
        "pandas.core.dtypes.base.ExtensionDtype",
        "pandas.core.internals.managers.BaseBlockManager",
        "pandas._libs.tslibs.timestamps._Timestamp",
        "pandas._libs.tslibs.timedeltas._Timedelta",
        "pandas._libs.tslibs.period._Period",
        "pandas._libs.interval.Interval",
        "pandas._libs.tslibs.offsets.BaseOffset",
        "pandas._libs.sparse.SparseIndex",
    ),
}
# Classes allowed as such, not their subclasses (numpy.memmap subclasses ndarray).
_EXACT_CLASSES = ("numpy.ndarray", "numpy.ma.core.MaskedArray", "numpy.matrix", "numpy.recarray")
# Never imported to decide, whatever library they belong to: running or importing them is
# what a test suite or a command line does, not a model.
_NEVER_IMPORTED = {
    "__main__",
    "conftest",
    "setup",
    "tests",
    "testing",
    "_testing",
    "estimator_checks",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
GLOBAL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    why: str = ""  # for a refusal: what the global is, in a few words


def normalize(module: str, name: str) -> tuple[str, str]:
    """The (module, name) the unpickler imports for a global (Python 2 names mapped)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _lookup(qualname: str) -> Any:
    module, _, name = qualname.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except Exception:  # another version of the library: that base does not exist there
        return None


@cache
def _bases(library: str) -> tuple[type, ...]:
    return tuple(b for b in map(_lookup, _BASES.get(library, ())) if isinstance(b, type))


@cache
def _exact_classes() -> tuple[type, ...]:
    return tuple(c for c in map(_lookup, _EXACT_CLASSES) if isinstance(c, type))


@cache
def _scorer_functions() -> frozenset[Any]:
    """The metric functions of scikit-learn's named scorers (``scoring="f1"``...), which a
    fitted search or scorer keeps."""
    try:
        from sklearn.metrics._scorer import _SCORERS
    except Exception:
        return frozenset()
    return frozenset(f for s in _SCORERS.values() if callable(f := getattr(s, "_score_func", None)))


def _resolve(module: str, name: str) -> tuple[Any, str]:
    """(object, "") for a global of a library whose classes may be allowed, else
    (None, why it is not looked at)."""
    parts = module.split(".")
    if parts[0] not in LIBRARIES:
        return None, "not a known reconstructor, and not of scikit-learn, numpy, scipy or pandas"
    if not _NAME.match(name) or not all(_NAME.match(p) for p in parts):
        return None, "not a plain module-level name"
    if any(p in _NEVER_IMPORTED or p.startswith("test_") for p in parts):
        return None, "in a test or command-line module"
    try:
        obj = getattr(importlib.import_module(module), name)
    except Exception as err:
        return None, f"not importable here ({type(err).__name__})"
    return obj, ""


def _allowed_object(obj: Any) -> str:
    """ "" when the object is a model class or a ufunc, else what it is."""
    import numpy as np

    if isinstance(obj, np.ufunc):
        return ""
    if not isinstance(obj, type):
        kind = "a function" if callable(obj) else f"a {type(obj).__name__} object"
        return f"{kind}, not a known reconstructor"
    library = str(getattr(obj, "__module__", "") or "").split(".")[0]
    if library not in LIBRARIES:
        return f"a class of {library or 'an unknown module'}"
    if obj in _exact_classes() or issubclass(obj, _bases(library)):
        return ""
    return f"a class of {library} that is not an estimator or a data structure of one"


class AllowList:
    """Decides on globals; ``trusted``: exact ``module.name`` globals allowed on top."""

    def __init__(self, trusted: Iterable[str] = ()):
        self.trusted = frozenset(trusted)

    @property
    def fingerprint(self) -> str:
        """Changes when what is allowed may change (rules or trusted globals)."""
        text = json.dumps([ALLOWLIST_VERSION, sorted(self.trusted)])
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()

    def check(self, module: str, name: str) -> Verdict:
        module, name = normalize(module, name)
        qual = f"{module}.{name}"
        if qual in _EXACT or qual in self.trusted:
            return Verdict(True)
        obj, why = _resolve(module, name)
        if why:
            return Verdict(False, why)
        scorer = module.startswith("sklearn.") and not isinstance(obj, type)
        if scorer and obj in _scorer_functions():
            return Verdict(True)
        why = _allowed_object(obj)
        return Verdict(not why, why)

    def check_qualname(self, qualname: str) -> Verdict:
        """A skops type name ``module.Name``."""
        if qualname in self.trusted:
            return Verdict(True)
        module, _, name = qualname.rpartition(".")
        return self.check(module, name)
