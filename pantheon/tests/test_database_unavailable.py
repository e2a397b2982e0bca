"""A lost database connection is a transient outage, not a bug: 503 `database_unavailable` with
a Retry-After, in JSON under /api/ and as a page in the console, where any other failure stays a
500. Which errors count is PostgreSQL's and psycopg's word, read from real errors here (the
production server's own drops: `test_database_outage`, `test_turn_database_drop`)."""

import logging
import time

import psycopg
import pytest
from django.contrib import admin
from django.db import IntegrityError, OperationalError, connection, connections, transaction
from psycopg_pool import PoolTimeout
from rest_framework.test import APIClient

from pantheon.db import connection_lost
from pantheon.error_views import server_error
from pantheon.testing.admin import client_for
from pantheon.testing.servers import free_port
from rooms.models import Agent

pytestmark = pytest.mark.django_db

API = "/api/v1"


def a_lost_connection() -> OperationalError:
    """What Django raises when PostgreSQL ended the connection under it (`pg_terminate_backend`,
    as a restart or a failover does)."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (pid,) = cursor.fetchone()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])
        with pytest.raises(OperationalError) as lost, other.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        other.close()
    return lost.value


def failure_of(sql: str, *setup: str) -> Exception:
    with pytest.raises(Exception) as failed, transaction.atomic(), connection.cursor() as cursor:
        for statement in setup:
            cursor.execute(statement)
        cursor.execute(sql)
    return failed.value


def test_a_connection_the_database_ended_or_refused_counts_as_lost():
    lost = a_lost_connection()
    assert isinstance(lost.__cause__, psycopg.errors.AdminShutdown)
    assert connection_lost(lost)
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(host="127.0.0.1", port=free_port(), user="postgres", connect_timeout=5)
    assert connection_lost(refused.value)
    # No connection from the pool in time: the database is down (or every connection busy).
    assert connection_lost(PoolTimeout("couldn't get a connection after 30.00 sec"))


def test_a_connection_the_servers_idle_session_timeout_ended_counts_as_lost():
    """57P05: a server's `idle_session_timeout` ends a connection left idle in the pool; it
    answered 500 server_error."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SET idle_session_timeout = 100")
        time.sleep(0.5)
        with pytest.raises(OperationalError) as ended, other.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        other.close()
    assert connection_lost(ended.value)


def test_a_statement_that_failed_on_a_live_connection_does_not(owner):
    timeout = failure_of("SELECT pg_sleep(1)", "SET LOCAL statement_timeout = 20")
    assert isinstance(timeout, OperationalError)  # psycopg's QueryCanceled, an operational error
    assert not connection_lost(timeout)
    with connection.cursor() as cursor:
        cursor.execute("LOCK TABLE rooms_agent IN ACCESS EXCLUSIVE MODE")
        other = connections.create_connection("default")
        try:
            with pytest.raises(OperationalError) as locked, other.cursor() as blocked:
                blocked.execute("SET lock_timeout = 20")
                blocked.execute("SELECT count(*) FROM rooms_agent")
        finally:
            other.close()
    assert not connection_lost(locked.value)
    duplicate = failure_of(f"INSERT INTO auth_user SELECT * FROM auth_user WHERE id = {owner.pk}")
    assert isinstance(duplicate, IntegrityError)
    assert not connection_lost(duplicate)
    assert not connection_lost(RuntimeError("a bug"))
    assert not connection_lost(None)


@pytest.fixture
def api(owner) -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(owner)
    return client


def test_an_api_request_that_loses_its_connection_answers_503_with_retry_after(
    api, monkeypatch, caplog
):
    lost = a_lost_connection()

    def list_agents(**kwargs):
        raise lost

    monkeypatch.setattr("rooms.selectors.agents_for_user", list_agents)
    with caplog.at_level(logging.ERROR):
        response = api.get(f"{API}/agents", HTTP_X_REQUEST_ID="req-lost")

    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"]["code"] == "database_unavailable"
    assert response["Retry-After"] == "2"
    assert response["X-Request-ID"] == "req-lost"
    # An outage an operator must see: the error, with its traceback, under the request's id.
    [logged] = [record for record in caplog.records if record.exc_info]
    assert logged.exc_info[1] is lost and logged.request_id == "req-lost"


def test_any_other_database_failure_stays_a_500(api, monkeypatch):
    timeout = failure_of("SELECT pg_sleep(1)", "SET LOCAL statement_timeout = 20")

    def list_agents(**kwargs):
        raise timeout

    monkeypatch.setattr("rooms.selectors.agents_for_user", list_agents)

    response = api.get(f"{API}/agents")

    assert response.status_code == 500
    assert response.json()["detail"]["code"] == "server_error"
    assert "Retry-After" not in response


def test_a_console_page_that_loses_its_connection_answers_a_503_page(staff, monkeypatch):
    lost = a_lost_connection()

    def app_list(*args, **kwargs):
        raise lost

    monkeypatch.setattr(admin.site, "get_app_list", app_list)
    client = client_for(staff)
    client.raise_request_exception = False

    response = client.get("/admin/")

    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert b"Service Unavailable (503)" in response.content
    assert response["Retry-After"] == "2"


def test_a_lost_connection_outside_the_apis_views_is_a_503_in_json(rf):
    """Django's own handler (a middleware's session save fails, say) answers as the views do."""
    try:
        raise a_lost_connection()
    except OperationalError:
        response = server_error(rf.get(f"{API}/agents"))

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "2"
    assert b'"database_unavailable"' in response.content
    assert Agent.objects.count() == 0  # the test's own connection is untouched
