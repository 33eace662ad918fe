"""Slow clients against the served API (uvicorn on loopback, real sockets; Kafka and Redis faked).

A client that trickles its headers is cut off by the header deadline (`stream.api._deadline`), one
that trickles its body gets 408 (`stream.api._limits`); neither holds a connection for long, and a
request whose headers and body arrived in time may take as long as its handler needs.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from stream._config import Settings
from stream.api._deadline import HeaderDeadlineProtocol
from stream.cli._api import ApiServer
from tests.stream.test_api import KEY, TID, FakeProducer, make_app

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
TRICKLE = 0.2  # seconds between bytes: every byte well inside any idle timeout
PATIENCE = 6.0  # how long a test keeps trickling before calling the connection held open


def serve(producer: FakeProducer | None = None) -> ApiServer:
    settings = Settings(api_keys=[KEY], api_body_timeout=BODY_TIMEOUT)
    return ApiServer(make_app(producer, settings=settings), header_timeout=HEADER_TIMEOUT)


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with serve() as srv:
        yield srv


def trickle(port: int, data: bytes, *, head: bytes = b"") -> tuple[float, bytes]:
    """Send `head` at once, then `data` a byte every TRICKLE seconds, until the server closes.

    Returns the seconds from connecting until the server closed the connection (`inf` when it
    was still open after PATIENCE seconds) and everything it answered.
    """
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as sock:
        start = time.monotonic()
        sent = 0
        try:
            if head:
                sock.sendall(head)
            while time.monotonic() - start < PATIENCE:
                if sent < len(data):
                    sock.send(data[sent : sent + 1])
                    sent += 1
                readable, _, _ = select.select([sock], [], [], TRICKLE)
                if readable:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return time.monotonic() - start, answer
                    answer += chunk
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start, answer
    return float("inf"), answer


REQUEST_HEAD = b"POST /v1/feedback HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n"
PADDING = b"X-Pad: " + b"a" * 200  # never finished within PATIENCE at one byte per TRICKLE


def test_a_client_trickling_its_headers_is_disconnected(api) -> None:
    closed_after, answer = trickle(api.port, REQUEST_HEAD + PADDING)
    assert closed_after < HEADER_TIMEOUT + 1.0, "the server kept a slow-header connection open"
    assert closed_after >= HEADER_TIMEOUT - 0.1
    assert answer == b""  # no request was read: nothing to answer


def test_a_client_that_sends_nothing_is_disconnected(api) -> None:
    closed_after, _ = trickle(api.port, b"")
    assert closed_after < HEADER_TIMEOUT + 1.0


def test_the_deadline_restarts_for_each_request_on_a_kept_alive_connection(api) -> None:
    body = b'{"trace_id": "%s", "value": true}' % TID.encode()
    first = REQUEST_HEAD + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    closed_after, answer = trickle(api.port, REQUEST_HEAD + PADDING, head=first)
    assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
    assert closed_after < HEADER_TIMEOUT + 1.0, "the second request's headers had no deadline"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_client_trickling_its_body_gets_408_and_is_disconnected(api, framing) -> None:
    if framing == "content-length":
        head = REQUEST_HEAD + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        data = b'{"trace_id": "' + b"t" * 900
    else:
        head = REQUEST_HEAD + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        data = b"".join(b"1\r\n%c\r\n" % c for c in b'{"trace_id": "tttttttttttttttttttttttt')
    closed_after, answer = trickle(api.port, data, head=head)
    assert closed_after < BODY_TIMEOUT + 1.0, "the server kept a slow-body connection open"
    # The 408 is sent before the close; a client still writing may see a reset instead of it.
    if answer:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"error":"request_timeout"' in answer


def test_a_slow_handler_is_not_cut_off_by_the_header_deadline() -> None:
    gate = threading.Event()
    producer = FakeProducer(gate=gate)
    with serve(producer) as srv:
        body = b'{"trace_id": "%s", "value": true}' % TID.encode()
        request = REQUEST_HEAD + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(request)
            time.sleep(HEADER_TIMEOUT + 0.5)  # Kafka "acks" only after the header deadline passed
            gate.set()
            assert sock.recv(65536).startswith(b"HTTP/1.1 202")
    assert len(producer.acked) == 1


def test_header_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="header timeout"):
        HeaderDeadlineProtocol.with_header_timeout(0)
