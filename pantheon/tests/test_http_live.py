"""The production server (gunicorn, its uvicorn worker, `pantheon.protocol`) at the HTTP level,
spoken to over raw sockets: what a client that asks `Expect: 100-continue` is told, requests
sent together on one connection, requests that are not HTTP; and what the server writes to its
log (LOG_FORMAT)."""

import json
import re
import socket
import time

import httpx
import pytest
from django.conf import settings
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import (
    AppServer,
    forget_throttle_history,
    free_port,
    json_objects,
    postgres_url,
)
from usage.models import ModelAlias

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

TOO_LARGE = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    log = tmp_path_factory.mktemp("http_live") / "server.log"
    with django_db_blocker.unblock():
        with AppServer(
            database_url=postgres_url(connection.settings_dict), log_path=log
        ) as running:
            yield running
        forget_throttle_history()


def _request_log(server: AppServer) -> list[dict]:
    """The server's request log so far (`pantheon.request`, one JSON object a line)."""
    lines = []
    for text in server.log_path.read_text().splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("logger") == "pantheon.request":
            lines.append(line)
    return lines


def _connect(server: AppServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _read_until(sock: socket.socket, done) -> bytes:
    """What the server sends until `done(received)` holds or it closes the connection."""
    received = b""
    while not done(received):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def _read_until_closed(sock: socket.socket) -> bytes:
    return _read_until(sock, lambda received: False)


def _responses(raw: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """The (status line, headers, body) of each response in `raw`, in order; ValueError if
    the last has not all come."""
    responses = []
    while raw:
        head, found, raw = raw.partition(b"\r\n\r\n")
        if not found:
            raise ValueError("a response's head is cut short")
        status, *lines = head.decode().split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if "content-length" in headers:
            length = int(headers["content-length"])
            if len(raw) < length:
                raise ValueError("a response's body is cut short")
            body, raw = raw[:length], raw[length:]
        elif headers.get("transfer-encoding") == "chunked":
            while True:
                size_line, found, raw = raw.partition(b"\r\n")
                if not found or len(raw) < int(size_line, 16) + 2:
                    raise ValueError("a response's body is cut short")
                size = int(size_line, 16)
                body, raw = body + raw[:size], raw[size + 2 :]
                if size == 0:
                    break
        responses.append((status, headers, body))
    return responses


def _complete(count: int):
    """Whether `count` whole responses have come."""

    def done(received: bytes) -> bool:
        try:
            return len(_responses(received)) >= count
        except ValueError:
            return False

    return done


def _post_head(path: str, length: int, *extra: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_body_announced_too_large_with_expect_100_continue_is_refused_before_it_is_sent(
    server,
):
    """The client announces 5 MB and waits to be told to send them. It was told `100 Continue`,
    then 413: a client that believes the first sends the 5 MB the second refuses. Now the 413
    comes alone, and the connection is closed after it (what follows could be the body or a
    next request)."""
    sock = _connect(server)
    sock.sendall(_post_head("/api/v1/agents", TOO_LARGE, "Expect: 100-continue"))
    started = time.monotonic()

    raw = _read_until_closed(sock)  # the body is never sent

    assert raw.startswith(b"HTTP/1.1 413 "), raw[:200]
    assert time.monotonic() - started < 3
    assert b"100 Continue" not in raw
    [(status, headers, body)] = _responses(raw)
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "detail": {
            "code": "request_too_large",
            "message": "The request body is larger than this server accepts "
            f"({settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes).",
        }
    }


def test_a_body_within_the_limit_with_expect_100_continue_is_asked_for_then_answered(server):
    body = b'{"username": "nobody"}'
    sock = _connect(server)
    sock.sendall(_post_head("/api/v1/auth/token", len(body), "Expect: 100-continue"))

    interim = _read_until(sock, lambda received: b"\r\n\r\n" in received)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(body)
    [(status, headers, answer)] = _responses(_read_until(sock, _complete(1)))

    assert status.startswith("HTTP/1.1 400 ")
    assert json.loads(answer) == {"password": ["This field is required."]}
    assert headers.get("connection") != "close"


def test_a_body_announced_too_large_without_expect_is_refused_before_it_is_sent(server):
    """No `Expect`: the 413 comes as soon as the headers are in, none of the body read (a
    client that watches for an early answer stops sending)."""
    sock = _connect(server)
    sock.sendall(_post_head("/api/v1/agents", TOO_LARGE))

    [(status, _, body)] = _responses(_read_until(sock, _complete(1)))

    assert status.startswith("HTTP/1.1 413 ")
    assert json.loads(body)["detail"]["code"] == "request_too_large"


def test_requests_sent_together_on_one_connection_are_all_answered_in_order(server):
    """Pipelined: three requests in one write, then two more on the kept-alive connection.
    uvicorn queues each behind the one before it (`pantheon.protocol` gives each its own read
    deadline from its turn)."""
    health = b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    missing = b"GET /api/v1/no-such-thing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    sock = _connect(server)

    sock.sendall(health + missing + health)
    first = _responses(_read_until(sock, _complete(3)))
    sock.sendall(missing + health)
    then = _responses(_read_until(sock, _complete(2)))

    statuses = [status.split()[1] for status, _, _ in first + then]
    assert statuses == ["200", "404", "200", "404", "200"]
    assert json.loads(first[0][2])["status"] == "ok"
    assert len({headers["x-request-id"] for _, headers, _ in first + then}) == 5


MALFORMED = {
    "a Content-Length that is no number": _post_head("/api/v1/agents", 2).replace(
        b"Content-Length: 2", b"Content-Length: abc"
    )
    + b"{}",
    "a Content-Length beside a Transfer-Encoding": _post_head(
        "/api/v1/agents", 2, "Transfer-Encoding: chunked"
    )
    + b"2\r\n{}\r\n0\r\n\r\n",
    "a request line that is not HTTP": b"HELLO THERE\r\n\r\n",
}


def _assert_malformed_request_answer(status: str, headers: dict, body: bytes) -> str:
    """The answer to a request that is not HTTP: the API's JSON 400; its request id."""
    assert status == "HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert json.loads(body) == {
        "detail": {
            "code": "malformed_request",
            "message": "The request could not be read: it is not valid HTTP/1.1 (its request "
            "line, a header, or the framing of its body).",
        }
    }
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"]), headers
    return headers["x-request-id"]


def _logged(server: AppServer, request_id: str) -> list[dict]:
    """The request log's lines for a request id, once one has come."""
    deadline = time.monotonic() + 5
    while not (
        lines := [line for line in _request_log(server) if line["request_id"] == request_id]
    ):
        assert time.monotonic() < deadline, f"no line in the request log for {request_id}"
        time.sleep(0.05)
    return lines


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_request_is_answered_400_in_json_with_its_request_id_and_log_line(
    server, request_bytes
):
    """uvicorn answered these itself, `400 text/plain "Invalid HTTP request received."`, with
    no X-Request-ID and no line in the request log: the one answer under /api/ that was not
    JSON, and no trace of it an operator could join with a client's report."""
    sock = _connect(server)
    sock.sendall(request_bytes)

    [(status, headers, body)] = _responses(_read_until_closed(sock))

    request_id = _assert_malformed_request_answer(status, headers, body)
    [line] = _logged(server, request_id)
    assert (line["level"], line["method"], line["path"], line["status_code"]) == (
        "WARNING",
        "-",
        "-",
        400,
    )


def test_a_chunked_body_that_is_malformed_is_answered_400_with_the_requests_line(server):
    """The headers were in (the app had the request, waiting for its body) when a chunk size
    that is no number came: one 400 in JSON, one line naming the request."""
    sock = _connect(server)
    sock.sendall(
        _post_head("/api/v1/agents", 0).replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
    )
    time.sleep(0.3)  # the app has the request
    sock.sendall(b"zz\r\n{}\r\n")

    [(status, headers, body)] = _responses(_read_until_closed(sock))

    request_id = _assert_malformed_request_answer(status, headers, body)
    [line] = _logged(server, request_id)
    assert (line["method"], line["path"], line["status_code"]) == ("POST", "/api/v1/agents", 400)
    time.sleep(0.5)
    assert not [line for line in _request_log(server) if line["status_code"] == 499]


def test_a_malformed_request_behind_a_good_one_is_answered_after_it(server):
    """Sent together on one connection: the good request gets its answer, then the malformed
    one its 400, and the connection is closed. uvicorn wrote its 400 at once, which the client
    read as the good request's answer, and closed the connection under it."""
    sock = _connect(server)
    sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nHELLO THERE\r\n\r\n")

    [first, second] = _responses(_read_until_closed(sock))

    assert first[0] == "HTTP/1.1 200 OK"
    assert json.loads(first[2])["status"] == "ok"
    _assert_malformed_request_answer(*second)


def _serve_then_stop(tmp_path, owner, make_agent, make_session, **env: str) -> list[str]:
    """The production server's whole output (gunicorn's lines at INFO, its access log on) for a
    health check, a malformed request and a turn whose provider cannot be reached, to its stop
    by SIGTERM."""
    session = make_session(owner, agent=make_agent(owner, "ada", model_alias="llama"))
    token = Token.objects.create(user=owner).key
    # Nothing listens there: the call fails at once.
    ModelAlias.objects.filter(alias="llama").update(
        litellm_model="openai/nobody",
        api_base=f"http://127.0.0.1:{free_port()}/v1",
        api_key_env="STUB_API_KEY",
    )
    server = AppServer(
        database_url=postgres_url(connection.settings_dict),
        log_path=tmp_path / "server.log",
        env={
            "GUNICORN_LOG_LEVEL": "info",
            "GUNICORN_ACCESS_LOG": "on",
            "LOG_LEVEL": "INFO",
            "PANTHEON_LLM_BACKEND": "live",
            "PANTHEON_LLM_MAX_RETRIES": "0",
            "STUB_API_KEY": "stub-key",
            **env,
        },
    )
    with server:
        assert httpx.get(f"{server.url}/api/v1/health", timeout=5).status_code == 200
        sock = _connect(server)
        sock.sendall(MALFORMED["a request line that is not HTTP"])
        [(status, _, _)] = _responses(_read_until_closed(sock))
        assert status.startswith("HTTP/1.1 400 ")
        turn = httpx.post(
            f"{server.url}/api/v1/sessions/{session.pk}/turns",
            json={"message": "hello"},
            headers={"Authorization": f"Token {token}"},
            timeout=30,
        )
        assert turn.status_code < 500, turn.text
    forget_throttle_history()
    return server.log_path.read_text().splitlines()


def test_with_log_format_json_every_line_the_server_writes_is_json(
    tmp_path, owner, make_agent, make_session
):
    """gunicorn's own lines (its start, a worker's boot and exit, the signal it stops on),
    uvicorn's ("Invalid HTTP request received.", its access lines) and litellm's about a failed
    call were plain text among the app's JSON lines: a log pipeline that parses one JSON object
    a line choked on them."""
    output = _serve_then_stop(tmp_path, owner, make_agent, make_session, LOG_FORMAT="json")

    lines = json_objects(output)
    for line in lines:
        assert {"time", "level", "logger", "message", "request_id"} <= line.keys(), line
        # uvicorn's message again in terminal colours; litellm's mark, `<object object at ...>`
        assert not {"color_message", "litellm_redacted"} & line.keys(), line
    said = {(line["logger"], line["message"]) for line in lines}
    for logger, message in [
        ("gunicorn.error", r"Booting worker with pid: \d+"),
        ("gunicorn.error", r"Handling signal: term"),
        ("gunicorn.error", r"Shutting down: Master"),
        ("uvicorn.error", r"Invalid HTTP request received\."),
        ("uvicorn.access", r'127\.0\.0\.1:\d+ - "GET /api/v1/health HTTP/1\.1" 200'),
        ("pantheon.request", r"- - 400 [\d.]+ ms"),
    ]:
        assert any(name == logger and re.fullmatch(message, text) for name, text in said), (
            logger,
            message,
        )


def test_with_log_format_text_gunicorns_lines_keep_their_format(
    tmp_path, owner, make_agent, make_session
):
    output = _serve_then_stop(tmp_path, owner, make_agent, make_session, LOG_FORMAT="text")

    gunicorn_line = r"\[[\d-]+ [\d:]+ [+-]\d{4}\] \[\d+\] \[(INFO|WARNING)\] "
    assert any(
        re.fullmatch(gunicorn_line + r"Booting worker with pid: \d+", line) for line in output
    )
    assert any(
        re.fullmatch(gunicorn_line + r"Invalid HTTP request received\.", line) for line in output
    )
    assert not [line for line in output if line.startswith("{")]
