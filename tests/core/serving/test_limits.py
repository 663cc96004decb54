"""Big bodies get 413 before they are read in full, chunked ones too; slow clients time out
(RELIABILITY 19). Spoken over raw sockets to control exactly what is sent when."""

from __future__ import annotations

import select
import socket
import time

import pytest

from tests.core.serving.conftest import frame, records

MiB = 1 << 20


@pytest.fixture
def running(serve, store):
    return serve(f"{store.register()}@champion", read_timeout=0.5)


@pytest.fixture
def calls(running):
    model = running.model()
    seen = []
    inner = model.predict
    model.predict = lambda rows: seen.append(rows.n_rows) or inner(rows)
    return seen


def head(port: int, extra: str) -> bytes:
    return (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def read_response(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_a_declared_10mb_body_gets_413_before_it_is_sent(running, calls):
    with socket.create_connection(("127.0.0.1", running.port)) as sock:
        sock.sendall(head(running.port, f"Content-Length: {10 * MiB}\r\n"))
        response = read_response(sock)  # not one body byte sent
        assert status_of(response) == 413
        assert b"connection: close" in response.lower()
        assert sock.recv(1) == b""  # and the server closed the connection
    assert calls == []


def test_a_chunked_body_without_length_is_cut_at_the_limit(running, calls):
    chunk = b"[" + b" " * (64 * 1024 - 2) + b"]"
    frame_ = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    sent = 0
    response = b""
    with socket.create_connection(("127.0.0.1", running.port)) as sock:
        sock.sendall(head(running.port, "Transfer-Encoding: chunked\r\n"))
        sock.setblocking(False)
        deadline = time.monotonic() + 10
        while sent < 10 * MiB and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 0.5)
            if readable:
                break  # the server answered before we were done
            if writable:
                try:
                    sent += sock.send(frame_)
                except (BlockingIOError, InterruptedError):
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
        sock.setblocking(True)
        response = read_response(sock)
    assert status_of(response) == 413, response[:200]
    assert sent < 10 * MiB  # it stopped reading long before the end
    assert calls == []


def test_a_body_just_under_the_limit_is_read(serve, store):
    running = serve(f"{store.register()}@champion", max_body_bytes=4096)
    body = records(frame(1))
    assert running.post(body).status == 200
    big = records(frame(40))
    reply = running.post(big)
    assert reply.status == 413 and "4096 bytes" in reply.json()["error"]


def test_a_slow_body_gets_408(running, calls):
    with socket.create_connection(("127.0.0.1", running.port)) as sock:
        sock.sendall(head(running.port, "Content-Length: 200\r\n") + b'[{"f0": 1')
        began = time.monotonic()
        response = read_response(sock)
    assert status_of(response) == 408
    assert 0.4 < time.monotonic() - began < 3
    assert calls == []


def test_a_client_trickling_its_headers_is_disconnected(running):
    with socket.create_connection(("127.0.0.1", running.port)) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        began = time.monotonic()
        closed = False
        while time.monotonic() - began < 5:
            try:
                sock.sendall(b"X")  # one header byte at a time, never finishing
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            ready, _, _ = select.select([sock], [], [], 0.1)
            if ready:
                try:
                    closed = sock.recv(1024) == b""
                except ConnectionResetError:
                    closed = True
                break
    assert closed
    assert time.monotonic() - began < 3


def test_an_unfinished_header_block_over_16kib_gets_400(running):
    """h11 buffers at most 16 KiB of an unfinished request head (memory stays bounded)."""
    with socket.create_connection(("127.0.0.1", running.port)) as sock:
        sock.sendall(head(running.port, "")[:-2] + f"X-Filler: {'a' * 40_000}".encode())
        assert status_of(read_response(sock)) == 400
