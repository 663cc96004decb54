"""Running a gateway on uvicorn, bound to loopback only, with timeouts for slow clients.

What protects the server from slow or greedy clients:

* The socket is bound by us to 127.0.0.1 (or ::1) before uvicorn starts; other addresses are
  refused (a gateway is reached through a proxy or ``nbmlops deploy export`` elsewhere).
* ``timeout_keep_alive`` closes idle keep-alive connections (default 5 s).
* uvicorn has no deadline for a request to *arrive*: its keep-alive timer is reset by every
  byte received, and an ASGI app only runs once the headers are complete, so a client
  trickling header bytes could hold a connection forever. :func:`deadline_protocol` subclasses
  uvicorn's h11 protocol to close a connection whose request head has not arrived within
  ``read_timeout`` of the connection opening (or of the previous response).
* The body then has ``read_timeout`` seconds to arrive in full (``RequestGuard`` answers 408)
  and is never read past ``max_body_bytes`` (413, connection closed).
* h11 refuses a request line plus headers larger than ``h11_max_incomplete_event_size``
  (16 KiB here) with 400, which bounds the memory a request head can take.
* At most ``max_connections`` (1000) connections and requests at once; uvicorn answers 503
  beyond that instead of queueing without bound, and logs one "Exceeded concurrency limit"
  line per refusal: :class:`RefusalLogLimiter` lets the first through, then one summary line
  per interval, so that a flood of connections does not flood the log.
* uvicorn's access log is off: it prints query strings, which may carry tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbmlops.core.serving.errors import ServingError
from nbmlops.exceptions import UsageError

if TYPE_CHECKING:  # imported when a server is made: bind_loopback alone stays light
    from nbmlops.core.serving.app import Gateway

log = logging.getLogger("nbmlops.serving")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_HEAD_BYTES = 16 * 1024
REFUSAL_LOG_INTERVAL = 10.0  # seconds between summaries of refused connections


class RefusalLogLimiter(logging.Filter):
    """Rate-limits uvicorn's "Exceeded concurrency limit" lines: the first one of a burst is
    logged, the rest are counted and summed up in at most one line per ``interval``.

    Hand-written: the standard library has no rate-limiting filter, and the packages that
    offer one drop the lines without saying how many, or only summarise when the next line
    comes (after a burst there may be none); this is a counter and a timer.
    """

    MESSAGE = "Exceeded concurrency limit"

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL):
        super().__init__()
        self.interval = interval
        self._lock = threading.Lock()
        self._suppressed = 0
        self._timer: threading.Timer | None = None  # set while a burst is being summarised
        self._logger: logging.Logger | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "nbmlops_summary", False) or not record.getMessage().startswith(
            self.MESSAGE
        ):
            return True
        with self._lock:
            if self._timer is not None:
                self._suppressed += 1
                return False
            self._logger = logging.getLogger(record.name)
            self._arm()
        return True

    def _arm(self) -> None:
        self._timer = threading.Timer(self.interval, self._summarise)
        self._timer.daemon = True
        self._timer.start()

    def _summarise(self) -> None:
        with self._lock:
            count, self._suppressed = self._suppressed, 0
            # A quiet interval ends the burst: the next refusal is logged in full again.
            self._timer = None
            if count:
                self._arm()
        if count:
            self._emit(count)

    def _emit(self, count: int) -> None:
        if self._logger is not None:
            self._logger.warning(
                "refused %s more connection%s over the concurrency limit in the last %g s",
                f"{count:,}",
                "" if count == 1 else "s",
                self.interval,
                extra={"nbmlops_summary": True},
            )

    def flush(self) -> None:
        """Log the count not summarised yet (at shutdown: no refusal goes uncounted)."""
        with self._lock:
            count, self._suppressed = self._suppressed, 0
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if count:
            self._emit(count)


_refusal_limiter: RefusalLogLimiter | None = None


def limit_refusal_logs() -> RefusalLogLimiter:
    """The process's :class:`RefusalLogLimiter`, installed once on uvicorn's error logger."""
    global _refusal_limiter
    if _refusal_limiter is None:
        _refusal_limiter = RefusalLogLimiter()
        logging.getLogger("uvicorn.error").addFilter(_refusal_limiter)
    return _refusal_limiter


def deadline_protocol(head_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a deadline for each request head to arrive."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadDeadlineH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_deadline()
            super().connection_lost(exc)

        def _arm_head_deadline(self) -> None:
            self._disarm_head_deadline()
            if not self.transport.is_closing():
                self._head_timer = self.loop.call_later(head_timeout, self._head_deadline_passed)

        def _disarm_head_deadline(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_deadline_passed(self) -> None:
            self._head_timer = None
            waiting_for_head = self.cycle is None or self.cycle.response_complete
            if waiting_for_head and not self.transport.is_closing():
                self.transport.close()

    return HeadDeadlineH11Protocol


def bind_loopback(host: str, port: int) -> socket.socket:
    """A listening socket on a loopback address; ServingError when the port is taken."""
    if host not in LOOPBACK_HOSTS:
        raise UsageError(
            f"The gateway binds to loopback only, not {host!r}",
            fix="Use 127.0.0.1 (put a proxy in front, or export with 'nbmlops deploy export').",
        )
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    address = "127.0.0.1" if host == "localhost" else host
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets whose proto says
    # TCP, and without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((address, port))
    except OSError as err:
        sock.close()
        raise ServingError(
            f"Cannot listen on {address}:{port}: {err.strerror}",
            fix="Pick another port with --port (0 picks a free one).",
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class GatewayServer:
    """A started :class:`Gateway` served by uvicorn, in the foreground or a thread."""

    def __init__(
        self,
        gateway: Gateway,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        timeout_keep_alive: int = 5,
        log_level: str = "warning",
        configure_logging: bool = False,
        sock: socket.socket | None = None,
    ):
        """``sock``: a socket already bound with :func:`bind_loopback` (``host`` and
        ``port`` are then not used to bind)."""
        import uvicorn

        from nbmlops.core.serving.app import create_app

        self.gateway = gateway
        self.app = create_app(gateway)
        self.socket = sock if sock is not None else bind_loopback(host, port)
        self.host = host
        self.port: int = self.socket.getsockname()[1]
        kwargs: dict[str, Any] = {} if configure_logging else {"log_config": None}
        self.config = uvicorn.Config(
            self.app,
            http=deadline_protocol(gateway.config.read_timeout),
            lifespan="off",
            ws="none",  # no WebSocket routes: skip importing a WebSocket implementation
            access_log=False,
            log_level=log_level,
            timeout_keep_alive=timeout_keep_alive,
            timeout_graceful_shutdown=10,
            limit_concurrency=gateway.config.max_connections,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            server_header=False,
            proxy_headers=False,
            **kwargs,
        )
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None
        self.refusal_log = limit_refusal_logs()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> GatewayServer:
        """Serve in a background thread; return once it accepts connections."""
        self._thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self.socket]},
            name="nbmlops-gateway",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServingError(f"The gateway did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, close_gateway: bool = True) -> None:
        """Stop serving (in-flight requests finish), then close the gateway's threads."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        with contextlib.suppress(OSError):
            self.socket.close()
        self.refusal_log.flush()
        if close_gateway:
            self.gateway.close()

    def run(self, on_signals_set: Callable[[], None] | None = None) -> None:
        """Serve in the foreground until SIGINT/SIGTERM; then drain and close the gateway.

        ``on_signals_set`` runs once SIGTERM would stop the server cleanly (the socket already
        listens: connections made from then on wait for uvicorn, they are not refused).
        """

        class _Stopped(Exception):
            pass

        def _stop(signum: int, frame: Any) -> None:
            raise _Stopped

        # uvicorn handles the first signal itself (graceful shutdown), then re-raises it to
        # the handler that was there before: ours, so that we get to flush the logs.
        previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if on_signals_set is not None:
                on_signals_set()
            self.server.run(sockets=[self.socket])
        except _Stopped:
            pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            with contextlib.suppress(OSError):
                self.socket.close()
            self.refusal_log.flush()
            self.gateway.close()
