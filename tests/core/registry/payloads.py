"""Pickles that run code through helpers of the libraries a model may use (numpy, scipy,
pandas, scikit-learn, joblib): each creates its ``marker`` path when unpickled, and the
globals they name are the ones a scan used to trust by package.

They are written opcode by opcode where the global must be spelled as the attacker spells
it (``numpy.testing.runstring``, not the module numpy defines it in)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _args(*args: Any) -> bytes:
    """The opcodes that push ``args`` as a tuple (without PROTO and STOP)."""
    return pickle.dumps(tuple(args), protocol=2)[2:-1]


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def call(module: str, name: str, *args: Any, protocol: int = 2) -> bytes:
    """A pickle whose loading calls ``module.name(*args)``."""
    return bytes([0x80, protocol]) + _global(module, name) + _args(*args) + b"R."


class System:
    """Unpickling this runs a shell command (for the second files some helpers open)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def _second_pickle(marker: Path) -> Path:
    second = marker.with_name(marker.name + ".second.pkl")
    second.write_bytes(pickle.dumps(System(f"touch {marker}")))
    return second


def _runstring(marker: Path) -> bytes:
    return call("numpy.testing", "runstring", f"open({str(marker)!r}, 'w').close()", {})


def _run_script(marker: Path) -> bytes:
    return call(
        "sklearn.utils._testing",
        "assert_run_python_script_without_output",
        f"open({str(marker)!r}, 'w').close()",
    )


def _numpy_load(marker: Path) -> bytes:
    import numpy as np

    second = marker.with_name(marker.name + ".second.npy")
    np.save(second, np.array([System(f"touch {marker}")], dtype=object), allow_pickle=True)
    return call("numpy", "load", str(second), None, True)  # (file, mmap_mode, allow_pickle)


def _read_pickle(marker: Path) -> bytes:
    return call("pandas", "read_pickle", str(_second_pickle(marker)))


def _joblib_load(marker: Path) -> bytes:
    return call("joblib", "load", str(_second_pickle(marker)))


def _memmap(marker: Path) -> bytes:
    return call("numpy", "memmap", str(marker), "uint8", "w+", 0, (1,))


def _joblib_memory(marker: Path) -> bytes:
    return call("joblib.memory", "Memory", str(marker))  # creates the cache folder


def _ufunc_reconstruct(marker: Path) -> bytes:
    # numpy's old ufunc reconstructor imports any module and returns any attribute of it
    reconstruct = _global("numpy.core", "_ufunc_reconstruct") + _args("os", "system") + b"R"
    return b"\x80\x02" + reconstruct + _args(f"touch {marker}") + b"R."


def _through_another_module(marker: Path) -> bytes:
    # protocol 4 resolves dotted names: sklearn.base's `np` reaches numpy.testing
    return call(
        "sklearn.base",
        "np.testing.runstring",
        f"open({str(marker)!r}, 'w').close()",
        {},
        protocol=4,
    )


def _scipy_distribution(marker: Path) -> bytes:
    # A scipy.stats distribution compiles the argument parser kept in its state when it is
    # unpickled: a class, not a function, that runs code.
    import scipy.stats

    dist = scipy.stats.norm
    forged = object.__new__(type(dist))
    forged.__dict__.update(dist.__getstate__())
    forged._parse_arg_template = f"open({str(marker)!r}, 'w').close()\n" + "".join(
        f"def {f}(*a, **k): pass\n" for f in ("_parse_args", "_parse_args_stats", "_parse_args_rvs")
    )
    return pickle.dumps(forged, protocol=4)


@dataclass(frozen=True)
class Payload:
    name: str
    offender: str  # the global the refusal must name
    make: Callable[[Path], bytes]

    def __str__(self) -> str:
        return self.name


PAYLOADS = [
    Payload("numpy-runstring", "numpy.testing.runstring", _runstring),
    Payload(
        "sklearn-run-script",
        "sklearn.utils._testing.assert_run_python_script_without_output",
        _run_script,
    ),
    Payload("numpy-load", "numpy.load", _numpy_load),
    Payload("pandas-read-pickle", "pandas.read_pickle", _read_pickle),
    Payload("joblib-load", "joblib.load", _joblib_load),
    Payload("numpy-memmap", "numpy.memmap", _memmap),
    Payload("joblib-memory", "joblib.memory.Memory", _joblib_memory),
    Payload("ufunc-reconstruct", "numpy.core._ufunc_reconstruct", _ufunc_reconstruct),
    Payload("dotted-name", "sklearn.base.np.testing.runstring", _through_another_module),
    Payload("scipy-distribution", "scipy.stats._continuous_distns.norm_gen", _scipy_distribution),
]
ISSUE_PAYLOADS = PAYLOADS[:2]  # the two helpers the scan used to call clean
