"""Execute one notebook in a real kernel with papermill.

A :class:`StepTask` is plain, picklable data, so the same :func:`execute_task` runs in a local
thread or on a Dask worker. A kernel can be started ahead of need (:class:`WarmKernel`) and
handed to papermill, which then skips kernel start-up on the step's own clock; kernels are shut
down after the step's result is published, so shutdown overlaps the next steps.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.core.data.digest_files import digest_file

log = logging.getLogger("nbmlops.pipeline")


@dataclass
class StepTask:
    name: str
    notebook: str  # absolute path of the source notebook
    output: str  # absolute path of the executed notebook
    parameters: dict[str, Any]
    cwd: str
    kernel_name: str
    env: dict[str, str] = field(default_factory=dict)  # added to the kernel's environment
    outputs: dict[str, str] = field(default_factory=dict)  # name -> absolute path
    timeout: float | None = None  # per cell, seconds


@dataclass
class StepOutcome:
    name: str
    ok: bool
    started: float
    ended: float
    error: str | None = None
    failed_cell: int | None = None  # index in the output notebook
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> file info
    killed: bool = False  # the kernel died (killed, out of memory) rather than a cell failing

    @property
    def duration_s(self) -> float:
        return self.ended - self.started


def file_info(path: str | Path) -> dict[str, Any]:
    st = os.stat(path)
    return {
        "path": str(path),
        "digest": digest_file(path).digest,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def _quiet() -> None:
    for name in ("papermill", "traitlets", "nbclient"):
        logging.getLogger(name).setLevel(logging.ERROR)


def kernel_env(task: StepTask) -> dict[str, str]:
    env = dict(os.environ)
    env.update(task.env)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


class WarmKernel:
    """A kernel started for one task in the calling thread's event loop (papermill runs the
    notebook in the same thread, hence the same loop)."""

    def __init__(self, task: StepTask):
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        self._run_sync = run_sync
        # IPC sockets: local only, no TCP port races, no "unencrypted TCP" warning. Each
        # kernel gets its own socket prefix: jupyter_client picks IPC "ports" by probing files,
        # which races when several kernels start at once in one folder.
        self.km = AsyncKernelManager(
            kernel_name=task.kernel_name, transport="ipc", ip=_ipc_prefix()
        )
        run_sync(self.km.start_kernel)(env=kernel_env(task), cwd=task.cwd)

    @property
    def pid(self) -> int | None:
        """The kernel's process id (local kernels)."""
        pid = getattr(self.km.provisioner, "pid", None)
        return int(pid) if pid else None

    def signal(self, signum: int) -> bool:
        """Send a signal from any thread: to the kernel's process group, as Jupyter's interrupt
        does (the kernel leads its own group), else to the kernel alone."""
        pid = self.pid
        if pid is None:
            return False
        try:
            group = os.getpgid(pid)
            if group == pid and group != os.getpgid(0):
                os.killpg(group, signum)
            else:
                os.kill(pid, signum)
            return True
        except OSError:
            return False

    def shutdown(self, now: bool = False) -> None:
        try:
            self._run_sync(self.km.shutdown_kernel)(now=now)
        except Exception as err:  # a kernel that already died
            log.debug("kernel shutdown: %s", err)
        finally:
            try:
                self._run_sync(self.km.cleanup_resources)()
            except Exception:
                pass
            for leftover in Path(self.km.ip).parent.glob(Path(self.km.ip).name + "-*"):
                leftover.unlink(missing_ok=True)


def _ipc_prefix() -> str:
    import tempfile
    import uuid

    folder = Path(tempfile.gettempdir()) / f"nbmlops-ipc-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return str(folder / uuid.uuid4().hex[:12])


def _error_cell(path: str) -> int | None:
    """Index, in the executed notebook papermill wrote, of the cell that raised (papermill's own
    index counts cells before it inserted its error markers)."""
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:
        return None
    for i, cell in enumerate(nb.cells):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return i
    return None


def import_papermill() -> Any:
    """papermill, imported without compiling rfc3987_syntax's grammar: jsonschema (through
    nbformat) imports that package when it is installed only to register IRI format checkers,
    which nbformat never uses, and it costs about a second of CPU per process."""
    import sys

    if "jsonschema" not in sys.modules and "rfc3987_syntax" not in sys.modules:
        sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]  # import -> ImportError
        try:
            import jsonschema  # noqa: F401
        finally:
            del sys.modules["rfc3987_syntax"]
    import papermill

    return papermill


def execute_task(
    task: StepTask, kernel: WarmKernel | None = None
) -> tuple[StepOutcome, WarmKernel]:
    """Run the notebook; never raises for the notebook's own failure (the outcome says it).
    Returns the kernel, still running: the caller shuts it down when convenient."""
    papermill = import_papermill()
    from papermill.exceptions import PapermillExecutionError

    _quiet()
    started = time.time()
    if kernel is None:
        kernel = WarmKernel(task)
    from nbclient.exceptions import DeadKernelError

    final = Path(task.output)
    final.parent.mkdir(parents=True, exist_ok=True)
    for path in task.outputs.values():  # declared outputs may go to folders not made yet
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # papermill rewrites its output file as cells run; it writes to a partial file here that
    # replaces the final one at the end, so an earlier notebook at that path is never left
    # half-written by a crash.
    partial = final.with_name(f".{final.stem}.{os.getpid()}.{id(task):x}.partial.ipynb")
    outcome = StepOutcome(task.name, ok=False, started=started, ended=started)
    try:
        papermill.execute_notebook(
            task.notebook,
            str(partial),
            parameters=task.parameters,
            km=kernel.km,
            kernel_name=task.kernel_name,
            progress_bar=False,
            log_output=False,
            execution_timeout=task.timeout,
        )
        outcome.ok = True
    except PapermillExecutionError as err:
        outcome.error = f"{err.ename}: {err.evalue}"
        outcome.failed_cell = _error_cell(str(partial))
    except DeadKernelError as err:
        outcome.killed = True
        outcome.error = f"the kernel died: {err}"
    except Exception as err:  # timeout, unreadable notebook
        outcome.error = f"{type(err).__name__}: {err}"
    if partial.exists():
        os.replace(partial, final)
    outcome.ended = time.time()
    if outcome.ok:
        for name, path in task.outputs.items():
            if not os.path.isfile(path):
                outcome.ok = False
                outcome.error = (
                    f"the notebook finished but did not write its declared output {name!r} ({path})"
                )
                break
            outcome.outputs[name] = file_info(path)
    return outcome, kernel


def run_task_standalone(task: StepTask) -> StepOutcome:
    """For a Dask worker: start a kernel, run, shut down, return the (picklable) outcome."""
    outcome, kernel = execute_task(task)
    kernel.shutdown()
    return outcome
