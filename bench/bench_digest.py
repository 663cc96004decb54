"""How fast is the full-content digest?

Compares ``nbmlops.core.data.hashing.digest_value`` with ``pandas.util.hash_pandas_object``
(the usual full-content alternative), with a plain numpy read of the same memory (the ceiling),
and with MLflow's dataset digest (which only looks at the first 10,000 rows).

    python bench/bench_digest.py            # 10M x 8 numeric frame, 1M-row string frame
    python bench/bench_digest.py --quick    # a tenth of that
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

SLOW_SECONDS = 2.0  # a baseline slower than this runs once instead of `repeat` times


def _run(fn: Callable[[], Any], times: list[float]) -> None:
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[float, int]:
    """Median wall time of ``repeat`` calls."""
    times: list[float] = []
    for _ in range(repeat):
        _run(fn, times)
    return statistics.median(times), len(times)


def _timed_maybe_once(fn: Callable[[], Any], repeat: int) -> tuple[float, int]:
    """Like _timed, but a call slower than SLOW_SECONDS is not repeated."""
    times: list[float] = []
    _run(fn, times)
    if times[0] <= SLOW_SECONDS:
        for _ in range(repeat - 1):
            _run(fn, times)
    return statistics.median(times), len(times)


def numeric_frame(rows: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    cols = {f"f{k}": rng.random(rows) for k in range(4)}
    cols |= {f"i{k}": rng.integers(0, 1 << 40, rows) for k in range(4)}
    return pd.DataFrame(cols)


def string_frame(rows: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    ids = rng.integers(0, 1 << 30, rows)
    return pd.DataFrame(
        {
            "name": pd.Series([f"user-{v:x}-{v % 977}" for v in ids], dtype="str"),
            "x": rng.random(rows),
            "y": rng.integers(0, 100, rows),
            "z": rng.random(rows),
        }
    )


def _buffers(df: Any) -> list[Any]:
    """Every data buffer behind the frame's columns, as numpy views."""
    import numpy as np

    out = []
    for _, col in df.items():
        if isinstance(col.dtype, np.dtype) and col.dtype.kind == "O":
            continue  # the strings live in Python objects: no buffer to read
        if isinstance(col.dtype, np.dtype):
            out.append(np.ascontiguousarray(col.to_numpy(copy=False)).view(np.uint8))
        else:
            for chunk in col.array.__arrow_array__().chunks:  # Arrow-backed strings
                out.extend(np.frombuffer(b, dtype=np.uint8) for b in chunk.buffers() if b)
    return out


def plain_read(buffers: list[Any]) -> int:
    """Touch every byte once: sum each buffer as uint64 words (the memory-bandwidth ceiling)."""
    import numpy as np

    total = 0
    for buf in buffers:
        words = buf[: buf.size - buf.size % 8].view(np.uint64)
        total += int(words.sum(dtype=np.uint64))
    return total


def _mlflow_digest(df: Any) -> str:
    import mlflow.data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mlflow.data.from_pandas(df).digest


def _bench_frame(label: str, df: Any, repeat: int, with_mlflow: bool) -> list[dict[str, Any]]:
    import numpy as np
    import pandas as pd

    from nbmlops.core.data.hashing import digest_value

    size = digest_value(df).nbytes  # warm-up; also the byte count every GB/s below uses
    buffers = _buffers(df)
    rows: list[dict[str, Any]] = []

    def add(method: str, seconds: float, runs: int, note: str = "") -> None:
        rows.append(
            {
                "frame": label,
                "method": method,
                "seconds": seconds,
                "gb_per_s": size / seconds / 1e9 if seconds > 0 else float("inf"),
                "bytes": size,
                "runs": runs,
                "note": note,
            }
        )

    add("nbmlops digest_value", *_timed(lambda: digest_value(df), repeat))
    add(
        "hash_pandas_object(df)", *_timed_maybe_once(lambda: pd.util.hash_pandas_object(df), repeat)
    )
    has_objects = any(isinstance(t, np.dtype) and t.kind == "O" for t in df.dtypes)
    add(
        "numpy read of same memory",
        *_timed(lambda: plain_read(buffers), repeat),
        "object columns skipped (no buffer)" if has_objects else "",
    )
    if with_mlflow:
        try:
            _mlflow_digest(df.head(10))  # pay the import outside the timing
            seconds, runs = _timed_maybe_once(lambda: _mlflow_digest(df), repeat)
        except Exception as err:  # mlflow missing or broken: the table still prints
            rows.append({"frame": label, "method": "mlflow", "error": repr(err)})
        else:
            add(
                "mlflow sampled digest (first 10,000 rows)",
                seconds,
                runs,
                "not full content; GB/s is nominal",
            )
    return rows


def run(
    rows_numeric: int = 10_000_000,
    rows_string: int = 1_000_000,
    repeat: int = 3,
    with_mlflow: bool = True,
) -> list[dict]:
    """Benchmark both frames; one dict per (frame, method) with seconds and GB/s."""
    results = _bench_frame(
        f"(a) numeric {rows_numeric:,} x 8", numeric_frame(rows_numeric), repeat, with_mlflow
    )
    strings = string_frame(rows_string)
    results += _bench_frame(f"(b) string+3 numeric {rows_string:,} x 4", strings, repeat, False)
    # the same frame with the strings as a numpy object column (pandas 2 style)
    strings["name"] = strings["name"].astype(object)
    results += _bench_frame("(c) as (b), strings dtype=object", strings, repeat, False)
    return results


def _ratios(results: list[dict]) -> list[str]:
    lines = []
    for frame in dict.fromkeys(r["frame"] for r in results):
        by = {r["method"]: r for r in results if r["frame"] == frame and "seconds" in r}
        ours = by["nbmlops digest_value"]["seconds"]
        hpo = by["hash_pandas_object(df)"]["seconds"]
        read = by["numpy read of same memory"]
        versus_read = (
            f"runs at {read['seconds'] / ours:.0%} of plain read bandwidth"
            if not read["note"]
            else "plain read not comparable (object columns have no buffer)"
        )
        lines.append(
            f"{frame}: digest is {hpo / ours:.1f}x faster than hash_pandas_object; {versus_read}"
        )
    return lines


def print_table(results: list[dict]) -> None:
    print(f"{'frame':<36} {'method':<44} {'median s':>9} {'GB/s':>8} {'runs':>4}  note")
    for r in results:
        if "error" in r:
            print(f"{r['frame']:<36} {r['method']:<44} error: {r['error']}")
            continue
        print(
            f"{r['frame']:<36} {r['method']:<44} {r['seconds']:>9.4f} "
            f"{r['gb_per_s']:>8.2f} {r['runs']:>4}  {r['note']}"
        )
    sizes = {r["frame"]: r["bytes"] for r in results if "bytes" in r}
    for frame, size in sizes.items():
        print(f"{frame}: {size / 1e6:,.0f} MB hashed")
    for line in _ratios(results):
        print(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="use 1/10 of the sizes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-mlflow", action="store_true", help="skip the mlflow comparison")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    results = run(
        rows_numeric=10_000_000 // scale,
        rows_string=1_000_000 // scale,
        repeat=args.repeat,
        with_mlflow=not args.no_mlflow,
    )
    print_table(results)


if __name__ == "__main__":
    try:
        import nbmlops  # noqa: F401
    except ImportError:  # running from a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
