"""The production worker's HTTP protocol (`pantheon.protocol`) on a uvicorn server of its own,
serving a bare ASGI app: the write timeout's clock runs from the moment the transport's buffer
is full, so a response's last write is timed too; a connection that sends nothing is closed
without an answer nobody asked for; a pipelined request gets its own time to arrive."""

import asyncio
import logging
import re
import socket
import struct
import threading
import time

import pytest
import uvicorn

from pantheon import logging_context
from pantheon.protocol import PantheonHttpProtocol
from pantheon.testing.servers import free_port

TCP_ESTABLISHED = 1
BIG = 20 * 1024 * 1024  # far past what the kernel buffers for a client that reads nothing


# When the app heard a `/wait` request's client go.
GONE: list[float] = []


async def app(scope, receive, send):
    """`/big`: 20 MB in one write, the response's last. `/slow`: a second's wait. `/early`:
    answered at once, its body unread. `/wait`: no answer, until its client goes (as Django's
    handler listens for it). Anything else: its body, echoed once it has all come."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/wait":
        while (await receive())["type"] != "http.disconnect":
            pass
        GONE.append(time.monotonic())
        return
    if scope["path"] == "/early":
        await send({"type": "http.response.start", "status": 413, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] in ("/big", "/big-said"):
        if scope["path"] == "/big-said":  # what the request middleware leaves for the protocol
            scope[logging_context.SCOPE_KEY] = {
                "ids": {"request_id": "req-said", "user_id": "7", "session_id": "s-1"},
                "client": "203.0.113.9",
            }
        payload = b"x" * BIG
    elif scope["path"] == "/slow":
        await asyncio.sleep(1)
        payload = b"slow"
    else:
        payload = b"echo:" + body
    headers = [(b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


@pytest.fixture
def server(settings):
    settings.PANTHEON_REQUEST_READ_TIMEOUT_SECONDS = 1.5
    settings.PANTHEON_WRITE_TIMEOUT_SECONDS = 1
    config = uvicorn.Config(
        app, port=free_port(), http=PantheonHttpProtocol, lifespan="off", log_level="error"
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield running
    running.should_exit = True
    thread.join(10)


def _connect(server, *, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.config.port))
    return sock


def _established(sock: socket.socket) -> bool:
    state = struct.unpack("B", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0]
    return state == TCP_ESTABLISHED


def _read_all(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_a_response_whose_last_write_is_never_read_has_its_connection_reset(server):
    """The reviewer's reproduction: 20 MB in one write, read by nobody. The clock ran only in
    the app's next write, and a last write has none: the connection stayed established, with
    megabytes queued, for as long as the client liked."""
    sock = _connect(server, receive_buffer=4096)
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    deadline = time.monotonic() + 8

    while _established(sock) and time.monotonic() < deadline:
        time.sleep(0.1)

    assert not _established(sock)
    assert len(server.server_state.connections) == 0
    sock.close()


@pytest.mark.parametrize(
    ("path", "says"),
    [
        # As the request's own line: its ids and the address the API's limits count.
        ("/big-said", ("req-said", "7", "s-1", None, "203.0.113.9")),
        # An answer the app gave without the middleware: the peer's address, no ids.
        ("/big", (None, None, None, None, "127.0.0.1")),
    ],
)
def test_the_line_of_a_reset_names_the_request_its_user_and_address(server, caplog, path, says):
    """It said only "a client read too little of its response for 60s": no request id, user or
    address, where every line of the request has them (the privacy reviewer's catch)."""
    sock = _connect(server, receive_buffer=4096)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    deadline = time.monotonic() + 8

    with caplog.at_level(logging.WARNING, logger="pantheon.protocol"):
        while _established(sock) and time.monotonic() < deadline:
            time.sleep(0.1)
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.05)

    [line] = [r for r in caplog.records if r.name == "pantheon.protocol"]
    assert line.getMessage() == (
        "a client read too little of its response for 1s: its connection is reset"
    )
    assert (line.request_id, line.user_id, line.session_id, line.turn_id, line.client) == says
    assert (line.method, line.path) == ("GET", path)
    sock.close()


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(server):
    sock = _connect(server)
    started = time.monotonic()

    assert _read_all(sock) == b""
    assert 1 <= time.monotonic() - started < 5


def test_a_request_that_stops_halfway_is_answered_408(server, caplog):
    """With a request id, and a line in the request log, as every answer the app gives has
    (the app never saw this request): an operator had no trace of the 408s."""
    sock = _connect(server)
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf")

    with caplog.at_level(logging.WARNING, logger="pantheon.request"):
        answer = _read_all(sock)

    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"code": "request_timeout"' in answer
    request_id = re.search(rb"\r\nx-request-id: ([0-9a-f]{32})\r\n", answer).group(1).decode()
    [line] = [r for r in caplog.records if r.name == "pantheon.request"]
    assert (line.request_id, line.method, line.path, line.status_code) == (
        request_id,
        "POST",
        "/echo",
        408,
    )


def test_a_pipelined_request_gets_its_own_time_once_the_one_before_it_is_answered(server):
    """A POST pipelined behind a slow GET, its body sent just after the GET is answered: it
    had only what was left of a deadline that had run on while the GET was being served."""
    sock = _connect(server)
    sock.sendall(
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"
    )
    first = b""
    while b"slow" not in first:
        first += sock.recv(65536)
    time.sleep(0.8)  # 1.8 s after the POST's headers, within 1.5 s of its turn
    sock.sendall(b"body")
    sock.settimeout(3)

    second = b""
    while b"echo:body" not in second and b"408" not in second:
        chunk = sock.recv(65536)
        if not chunk:
            break
        second += chunk

    assert b"echo:body" in second, second


def test_a_request_answered_before_its_body_came_gets_no_second_answer(server):
    """Answered (a 413) as soon as its headers were in, its body never finished: at the
    deadline the connection is closed. It got a 408 as well, a second answer to one request."""
    sock = _connect(server)
    sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf")

    answer = _read_all(sock)

    assert answer.startswith(b"HTTP/1.1 413 ")
    assert answer.count(b"HTTP/1.1") == 1, answer


def test_a_client_that_closes_its_connection_mid_request_is_seen_gone(server):
    """Its end of file is taken for what it almost always is, a client that gave up (a
    timeout, Ctrl-C): the app hears `http.disconnect` at once, as nginx takes it for a client
    abort. A client that only shut its sending side down and waits for the answer sends the
    same end of file; treating it as such kept every hung-up request in flight (and its place
    in the worker's count) until its answer was written to nobody."""
    sock = _connect(server)
    sock.sendall(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    closed = time.monotonic()
    sock.close()

    deadline = time.monotonic() + 3
    while not GONE and time.monotonic() < deadline:
        time.sleep(0.02)

    assert GONE and GONE[0] - closed < 1


def test_a_malformed_body_of_a_request_answered_before_it_came_gets_no_second_answer(server):
    """Answered (a 413) as soon as its headers were in, then a chunk size that is no number:
    the connection is closed. uvicorn wrote its 400 after the 413, a second answer to one
    request, which a client reads as its next request's."""
    sock = _connect(server)
    sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    time.sleep(0.3)  # answered
    sock.sendall(b"zz\r\nhalf\r\n")

    answer = _read_all(sock)

    assert answer.startswith(b"HTTP/1.1 413 ")
    assert answer.count(b"HTTP/1.1") == 1, answer


def test_a_request_pipelined_behind_a_slow_one_with_a_malformed_body_is_answered_after_it(
    server, caplog
):
    """Sent in one write: a slow GET, then a POST whose chunked body is malformed. The GET is
    answered, then the POST (which the app never started) gets its 400, and its line names
    it. uvicorn answered the 400 at once, read by the client as the GET's answer."""
    sock = _connect(server)
    sock.sendall(
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    )

    with caplog.at_level(logging.WARNING, logger="pantheon.request"):
        answer = _read_all(sock)

    first, _, second = answer.partition(b"slow")
    assert first.startswith(b"HTTP/1.1 200 "), answer
    assert second.startswith(b"HTTP/1.1 400 "), answer
    assert b'"code": "malformed_request"' in second
    [line] = [r for r in caplog.records if r.name == "pantheon.request"]
    assert (line.method, line.path, line.status_code) == ("POST", "/echo", 400)


def test_requests_pipelined_before_bytes_that_are_not_http_are_all_answered_first(server):
    """Two requests, then bytes that are no request, in one write: both answered in order,
    then the 400, then the connection is closed."""
    sock = _connect(server)
    sock.sendall(
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
        b"HELLO THERE\r\n\r\n"
    )

    answer = _read_all(sock)

    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"200", b"200", b"400"], answer
    assert answer.index(b"slow") < answer.index(b"echo:hi") < answer.index(b"malformed_request")
