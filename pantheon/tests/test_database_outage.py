"""The production server (gunicorn, its pool of PostgreSQL connections) when PostgreSQL drops
the connections it holds: a restart, a failover, a proxy's idle timeout, an operator's
`pg_terminate_backend`. The requests after it are served on new connections."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from django.db import connection, transaction
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import (
    AppServer,
    end_other_connections,
    forget_throttle_history,
    postgres_url,
)
from pantheon.testing.tcp_proxy import TcpProxy

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture(autouse=True)
def _no_throttle_history():
    yield
    forget_throttle_history()


@pytest.mark.parametrize(
    ("pool", "timeout"),
    [
        # The pool's connections ended together (PostgreSQL's clients ended, by an operator's
        # pg_terminate_backend say): none is handed to a request.
        (4, 30),
        # And none is tried one by one: psycopg's pool handed them to the next request 1, 2,
        # 4 s apart, past its pool timeout (here 5 s), a 503 though PostgreSQL was up. The
        # first dead one found has the others checked at once.
        (8, 5),
    ],
)
def test_connections_the_database_dropped_are_never_handed_to_a_request(owner, pool, timeout):
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    env = {"DB_POOL_MAX_SIZE": str(pool), "DB_POOL_MIN_SIZE": str(pool)}
    env["DB_POOL_TIMEOUT"] = str(timeout)
    with AppServer(database_url=postgres_url(connection.settings_dict), env=env) as server:
        url = f"{server.url}/api/v1/agents"
        # Every connection of the pool has served a request.
        with httpx.Client(headers=headers, timeout=30) as client:
            assert {client.get(url).status_code for _ in range(8)} == {200}
        assert end_other_connections() >= pool

        statuses = [httpx.get(url, headers=headers, timeout=30).status_code for _ in range(8)]

    assert statuses == [200] * 8


def test_a_request_whose_connection_is_ended_mid_query_answers_503_then_the_next_is_served(
    owner,
):
    """The pool's checks cannot save a request whose query is under way when PostgreSQL ends
    its connection: it answers 503 `database_unavailable` with a Retry-After, not a 500 that
    reads as a bug, and the retry it asks for is served."""
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    with AppServer(database_url=postgres_url(connection.settings_dict)) as server:
        url = f"{server.url}/api/v1/agents"
        answers: list = []
        request = threading.Thread(
            target=lambda: answers.append(httpx.get(url, headers=headers, timeout=30))
        )
        with transaction.atomic():
            # The list's query waits on the table; its connection is ended as it waits.
            with connection.cursor() as cursor:
                cursor.execute("LOCK TABLE rooms_agent IN ACCESS EXCLUSIVE MODE")
            request.start()
            deadline = time.monotonic() + 30
            while not end_other_connections(waiting_on_a_lock=True):
                assert time.monotonic() < deadline, "the list's query never waited on the lock"
                time.sleep(0.05)
        request.join(30)
        retried = httpx.get(url, headers=headers, timeout=30)

    [lost] = answers
    assert lost.status_code == 503, lost.text
    assert lost.json()["detail"]["code"] == "database_unavailable"
    assert lost.headers["Retry-After"] == "2"
    assert retried.status_code == 200


@contextmanager
def _served_through(proxy: TcpProxy, headers: dict) -> Iterator[AppServer]:
    """A server reaching the test database through `proxy`, waiting 2 s for a connection, that
    has served a request."""
    url = proxy.database_url(connection.settings_dict)
    with AppServer(database_url=url, env={"DB_POOL_TIMEOUT": "2"}) as server:
        agents = httpx.get(f"{server.url}/api/v1/agents", headers=headers, timeout=30)
        assert agents.status_code == 200
        yield server


def _served_again(url: str, headers: dict, *, within: float) -> httpx.Response:
    """The first answer other than 503, asking again as each 503's Retry-After says."""
    deadline = time.monotonic() + within
    while True:
        answer = httpx.get(url, headers=headers, timeout=within)
        if answer.status_code != 503 or time.monotonic() > deadline:
            return answer
        time.sleep(float(answer.headers.get("Retry-After", "1")))


def test_while_postgresql_refuses_connections_requests_answer_503_and_are_served_once_it_is_back(
    owner, tcp_proxy
):
    """PostgreSQL stopped (every connection closed, new ones refused): a request waits for the
    pool (DB_POOL_TIMEOUT), then answers 503 `database_unavailable`; once PostgreSQL is back the
    next request is served."""
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    with _served_through(tcp_proxy, headers) as server:
        url = f"{server.url}/api/v1/agents"

        tcp_proxy.cut()
        down = httpx.get(url, headers=headers, timeout=30)
        health = httpx.get(f"{server.url}/api/v1/health", timeout=30)
        tcp_proxy.restore()
        back = httpx.get(url, headers=headers, timeout=30)

    assert down.status_code == 503, down.text
    assert down.json()["detail"]["code"] == "database_unavailable"
    assert down.headers["Retry-After"] == "2"
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert back.status_code == 200, back.text


def test_a_database_that_takes_connections_and_never_answers_is_given_up_on_until_it_is_back(
    owner, tcp_proxy
):
    """A stuck proxy or pooler in front of PostgreSQL: it accepts the pool's new connections and
    never answers them. Each attempt is given up after DB_CONNECT_TIMEOUT (default 5 s) and
    retried, so the worker is served again once connections are answered. Without that limit
    the pool's attempt waited forever, and the worker answered 503 to every request after the
    database was back."""
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    with _served_through(tcp_proxy, headers) as server:
        url = f"{server.url}/api/v1/agents"

        tcp_proxy.hang()
        down = httpx.get(url, headers=headers, timeout=30)
        tcp_proxy.restore()
        back = _served_again(url, headers, within=30)

    assert down.status_code == 503, down.text
    assert down.json()["detail"]["code"] == "database_unavailable"
    assert back.status_code == 200, back.text
