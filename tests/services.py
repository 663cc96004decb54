"""Real services for the server lane of the test suite.

``PostgresServer`` runs a throw-away PostgreSQL cluster and ``MlflowServer`` runs a real
``mlflow server`` process (uvicorn) against it. Both bind to 127.0.0.1 only, live in temporary
folders, are safe to stop twice and are stopped at interpreter exit if a test forgets to.

Plain Python on purpose: no pytest import, so the classes can also be used from scripts.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from nbmlops.core.process import pid_alive

__all__ = [
    "PG_MISSING_MESSAGE",
    "MlflowServer",
    "PostgresServer",
    "find_free_port",
    "find_pg_bindir",
    "mlflow_server_env",
    "sqlalchemy_postgres_uri",
]

HOST = "127.0.0.1"
PG_MISSING_MESSAGE = (
    "PostgreSQL server binaries not found: run `make system` (apt-get install postgresql)"
)
_PG_TOOLS = ("initdb", "pg_ctl", "postgres")
_PG_PREFIX = "nbmlops-pg-"

# Every running service (strong references), so that an interrupted session does not leave
# processes behind: stopped at interpreter exit and on SIGTERM.
_LIVE: set = set()
_SIGTERM_HOOKED = False


@atexit.register
def _stop_all() -> None:
    for service in list(_LIVE):
        with contextlib.suppress(Exception):
            service.stop()


def _on_sigterm(signum, frame) -> None:
    _stop_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)  # die the way we were asked to


def _register(service) -> None:
    """Track a started service; hook SIGTERM (only if nobody else did) to clean up first."""
    global _SIGTERM_HOOKED
    _LIVE.add(service)
    if _SIGTERM_HOOKED:
        return
    _SIGTERM_HOOKED = True
    with contextlib.suppress(ValueError):  # not in the main thread
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)


def _die_with_parent_preexec():
    """A preexec_fn that makes the child get SIGTERM when the test process dies, even by
    SIGKILL (Linux PR_SET_PDEATHSIG); None elsewhere.

    Caveat: the signal fires when the *thread* that spawned the child exits, so start services
    from a long-lived thread (pytest fixtures run in the main thread). ctypes is resolved here,
    in the parent: importing in the forked child could deadlock.
    """
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except Exception:
        return None

    def preexec() -> None:
        prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG

    return preexec


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _version_key(path: str) -> tuple:
    name = Path(path).parent.name  # /usr/lib/postgresql/<version>/bin
    return tuple(int(p) if p.isdigit() else 0 for p in name.split("."))


def find_pg_bindir() -> Path:
    """Directory holding initdb, pg_ctl and postgres (newest Debian version first, then PATH)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/"), key=_version_key, reverse=True)
    for bindir in candidates:
        if all(os.access(Path(bindir, tool), os.X_OK) for tool in _PG_TOOLS):
            return Path(bindir)
    found = [shutil.which(tool) for tool in _PG_TOOLS]
    if all(found):
        return Path(found[0]).resolve().parent
    raise RuntimeError(PG_MISSING_MESSAGE)


class PostgresServer:
    """A private PostgreSQL cluster on 127.0.0.1:<free port>.

    ``start()`` runs initdb into a fresh temporary folder, starts the server with ``pg_ctl -w``
    and creates a login role plus a database owned by it. When running as root the cluster is
    owned by (and run as) the ``postgres`` OS user, since initdb refuses to run as root.
    """

    def __init__(
        self,
        user: str = "nbmlops",
        password: str | None = None,
        dbname: str = "nbmlops",
        os_user: str = "postgres",
    ) -> None:
        self.user = user
        self.password = password or secrets.token_hex(12)
        self.dbname = dbname
        self.os_user = os_user
        self.port: int | None = None
        self.root: Path | None = None
        self.bindir: Path | None = None
        self._running = False

    # -- paths -----------------------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        return self._root / "data"

    @property
    def socketdir(self) -> Path:
        return self._root / "sock"

    @property
    def logfile(self) -> Path:
        return self._root / "postgres.log"

    @property
    def _root(self) -> Path:
        if self.root is None:
            raise RuntimeError("PostgresServer has not been started")
        return self.root

    @property
    def url(self) -> str:
        """libpq URL of the default database (``psycopg2.connect(url)`` accepts it)."""
        return self.url_for(self.dbname)

    def url_for(self, dbname: str, driver: str | None = None) -> str:
        """``postgresql://user:pw@127.0.0.1:PORT/dbname``; ``driver="psycopg2"`` gives the
        ``postgresql+psycopg2://`` form SQLAlchemy (and so ``mlflow server``) needs."""
        if self.port is None:
            raise RuntimeError("PostgresServer has not been started")
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}:{self.password}@{HOST}:{self.port}/{dbname}"

    @property
    def running(self) -> bool:
        return self._running

    # -- process helpers -------------------------------------------------------------------
    def _as_owner(self, args: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return args
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", self.os_user, "--", *args]

    def _run(
        self, args: list[str], timeout: float = 120, cwd: Path | None = None
    ) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        return subprocess.run(
            self._as_owner(args),
            cwd=cwd or self._root,  # the postgres OS user cannot enter root's cwd
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,  # Ctrl-C in the terminal must not hit the postmaster
        )

    def _check(self, proc: subprocess.CompletedProcess, what: str) -> None:
        if proc.returncode != 0:
            raise RuntimeError(
                f"{what} failed (exit {proc.returncode})\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\n"
                f"server log tail:\n{_tail(self.logfile)}"
            )

    def _pg(self, tool: str) -> str:
        assert self.bindir is not None
        return str(self.bindir / tool)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> PostgresServer:
        if self._running:
            return self
        self.bindir = find_pg_bindir()
        self._reap_stale_clusters()
        self.root = Path(tempfile.mkdtemp(prefix=_PG_PREFIX))
        _register(self)
        try:
            (self.root / "owner.pid").write_text(str(os.getpid()))
            if os.geteuid() == 0:
                shutil.chown(self.root, user=self.os_user, group=self.os_user)
            os.chmod(self.root, 0o700)
            self.socketdir.mkdir(mode=0o700)
            if os.geteuid() == 0:
                shutil.chown(self.socketdir, user=self.os_user, group=self.os_user)
            self._initdb()
            self._start_postmaster(timeout)
            self._running = True
            self._sql(
                "CREATE ROLE {} LOGIN PASSWORD %s",
                self.user,
                params=(self.password,),
            )
            self.create_database(self.dbname)
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self) -> None:
        proc = self._run(
            [
                self._pg("initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        self._check(proc, "initdb")
        settings = {
            "listen_addresses": f"'{HOST}'",
            "unix_socket_directories": f"'{self.socketdir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "'32MB'",
            "logging_collector": "off",
        }
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# nbmlops test settings\n")
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())

    def _start_postmaster(self, timeout: float) -> None:
        last_error: RuntimeError | None = None
        for _ in range(5):  # retry if another process grabbed the free port meanwhile
            self.port = find_free_port()
            proc = self._run(
                [
                    self._pg("pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "-D",
                    str(self.datadir),
                    "-l",
                    str(self.logfile),
                    "-o",
                    f"-p {self.port}",
                ],
                timeout=timeout + 30,
            )
            if proc.returncode == 0:
                return
            try:
                self._check(proc, "pg_ctl start")
            except RuntimeError as exc:
                last_error = exc
            if "already in use" not in _tail(self.logfile):
                break
        assert last_error is not None
        raise last_error

    def _connect(self, dbname: str = "postgres"):
        import psycopg2  # only needed once the server runs

        conn = psycopg2.connect(
            host=str(self.socketdir), port=self.port, user="postgres", dbname=dbname
        )
        conn.autocommit = True
        return conn

    def _sql(self, statement: str, *identifiers: str, params: tuple = ()) -> None:
        from psycopg2 import sql

        query = sql.SQL(statement).format(*(sql.Identifier(i) for i in identifiers))
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        """Create an empty database owned by the test role; return its SQLAlchemy URL."""
        if not self._running:
            raise RuntimeError("PostgresServer is not running")
        self._sql("CREATE DATABASE {} OWNER {}", name, self.user)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        self._sql("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)

    def stop(self) -> None:
        root, self.root = self.root, None
        running, self._running = self._running, False
        _LIVE.discard(self)
        if root is None:
            return
        datadir = root / "data"
        if running or (datadir / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._run(
                    [self._pg("pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(datadir)],
                    timeout=60,
                    cwd=root,
                )
            self._kill_leftover(datadir)
        shutil.rmtree(root, ignore_errors=True)

    def _reap_stale_clusters(self) -> None:
        """Stop and delete clusters left by test processes that died without cleaning up
        (SIGKILL, os._exit); clusters of live processes are left alone."""
        for stale in glob.glob(os.path.join(tempfile.gettempdir(), _PG_PREFIX + "*")):
            stale_root = Path(stale)
            try:
                owner = int((stale_root / "owner.pid").read_text())
            except (OSError, ValueError):
                continue
            if pid_alive(owner):
                continue
            with contextlib.suppress(Exception):
                self._run(
                    [self._pg("pg_ctl"), "stop", "-w", "-m", "immediate", "-D", f"{stale}/data"],
                    timeout=30,
                    cwd=stale_root,
                )
            self._kill_leftover(stale_root / "data")
            shutil.rmtree(stale_root, ignore_errors=True)

    @staticmethod
    def _kill_leftover(datadir: Path) -> None:
        pidfile = datadir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<PostgresServer {HOST}:{self.port} running={self._running}>"


def sqlalchemy_postgres_uri(uri: str) -> str:
    """Pin the psycopg2 driver on a bare ``postgresql://`` URI.

    SQLAlchemy 2.1 maps ``postgresql://`` to psycopg (v3), which is not installed; the project
    ships psycopg2-binary. Other URIs are returned unchanged.
    """
    for bare in ("postgresql://", "postgres://"):
        if uri.startswith(bare):
            return "postgresql+psycopg2://" + uri[len(bare) :]
    return uri


def mlflow_server_env() -> dict[str, str]:
    """Environment for the ``mlflow server`` child: offline, no telemetry, no job runner."""
    env = dict(os.environ)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
        env.pop(key, None)
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        # The job runner (huey consumer) is a second long-lived child with its own temp dir
        # in /dev/shm; tests do not need it.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS="false",
        PYTHONUNBUFFERED="1",
    )
    # Talking to 127.0.0.1 must never go through a proxy.
    no_proxy = ",".join(x for x in (env.get("NO_PROXY"), "127.0.0.1,localhost") if x)
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    return env


class MlflowServer:
    """``mlflow server`` on http://127.0.0.1:<port>; the port stays fixed across restarts."""

    def __init__(
        self,
        backend_store_uri: str,
        artifacts_dir: str | os.PathLike,
        port: int | None = None,
        python: str | None = None,
        log_path: str | os.PathLike | None = None,
    ) -> None:
        self.backend_store_uri = backend_store_uri
        self.artifacts_dir = Path(artifacts_dir)
        self.port = port or find_free_port()
        self.python = python or sys.executable
        self.log_path = (
            Path(log_path)
            if log_path
            else self.artifacts_dir.parent / (f"mlflow-server-{self.port}.log")
        )
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None  # duration of the last successful start()

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        return [
            self.python,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            sqlalchemy_postgres_uri(self.backend_store_uri),
            "--artifacts-destination",
            str(self.artifacts_dir),
            "--serve-artifacts",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]

    def start(self, timeout: float = 60) -> MlflowServer:
        if self.running:
            return self
        began = time.monotonic()
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if _port_open(self.port):
            raise RuntimeError(f"cannot start mlflow server: port {self.port} is already in use")
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')}: {self.command()}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=mlflow_server_env(),
                cwd=self.artifacts_dir.parent,
                start_new_session=True,  # own process group: stop() kills uvicorn with it
                preexec_fn=_die_with_parent_preexec(),
            )
        _register(self)
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _wait_healthy(self, timeout: float) -> None:
        assert self.proc is not None
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"mlflow server exited with code {code} during start-up\n"
                    f"command: {' '.join(self.command())}\n"
                    f"log tail ({self.log_path}):\n{_tail(self.log_path)}"
                )
            try:
                with opener.open(f"{self.uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(
            f"mlflow server did not answer 200 on {self.uri}/health within {timeout}s "
            f"(last: {last})\nlog tail ({self.log_path}):\n{_tail(self.log_path)}"
        )

    def stop(self, timeout: float = 15) -> None:
        proc, self.proc = self.proc, None
        _LIVE.discard(self)
        if proc is None:
            return
        pgid = proc.pid  # start_new_session=True: the group id is the leader's pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        # Whatever is left in the group (uvicorn worker, stragglers) gets SIGKILL.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)  # still members (possibly unreaped zombies)?
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.05)
        # The listening socket must be gone before restart() binds the same port again.
        deadline = time.monotonic() + timeout
        while _port_open(self.port, timeout=0.2) and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart(self, timeout: float = 60) -> MlflowServer:
        self.stop()
        return self.start(timeout=timeout)

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<MlflowServer {self.uri} running={self.running}>"
