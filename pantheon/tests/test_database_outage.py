"""The production server (gunicorn, its pool of PostgreSQL connections) when PostgreSQL drops
the connections it holds: a restart, a failover, a proxy's idle timeout, an operator's
`pg_terminate_backend`. The requests after it are served on new connections."""

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import (
    AppServer,
    end_other_connections,
    forget_throttle_history,
    postgres_url,
)

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture(autouse=True)
def _no_throttle_history():
    yield
    forget_throttle_history()


def test_connections_the_database_dropped_are_never_handed_to_a_request(owner):
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    env = {"DB_POOL_MAX_SIZE": "4", "DB_POOL_MIN_SIZE": "4"}
    with AppServer(database_url=postgres_url(connection.settings_dict), env=env) as server:
        url = f"{server.url}/api/v1/agents"
        # Every connection of the pool has served a request.
        with httpx.Client(headers=headers, timeout=30) as client:
            assert {client.get(url).status_code for _ in range(8)} == {200}
        assert end_other_connections() >= 4

        statuses = [httpx.get(url, headers=headers, timeout=30).status_code for _ in range(8)]

    assert statuses == [200] * 8
