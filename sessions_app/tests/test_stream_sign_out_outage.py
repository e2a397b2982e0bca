"""A stream reads its credentials again every heartbeat interval (`_while_signed_in`); a
database blip at that moment says nothing of them. The stream broke off with the
OperationalError (a follower's stream, whose polls ride the blip out, and a live turn's); it
now goes on and reads them again at the next interval."""

import asyncio
import contextlib
import time
from unittest import mock

import httpx
import pytest
from django.db import OperationalError, connection

from pantheon.testing.servers import AppServer
from sessions_app import api_turns
from sessions_app.tests.test_follow_limit import Follows, running_turn


async def _events(n: int):
    for i in range(n):
        yield f"event: step_delta\nid: {i}\n\n"
        await asyncio.sleep(0.01)


def _read(checks) -> list[str]:
    async def read():
        return [text async for text in api_turns._while_signed_in(_events(5), request=None)]

    with mock.patch.object(api_turns, "still_signed_in", side_effect=checks):
        return asyncio.run(read())


@pytest.fixture(autouse=True)
def every_event(settings):
    settings.PANTHEON_SSE_HEARTBEAT_SECONDS = 0  # credentials read after every event


def test_a_database_blip_at_a_credentials_check_does_not_break_the_stream():
    read = _read([OperationalError("server closed the connection"), True, True, True, True])

    assert len(read) == 5 and ": signed out\n\n" not in read


def test_credentials_revoked_after_the_blip_still_end_the_stream():
    read = _read([OperationalError("server closed the connection"), False])

    assert read[-1] == ": signed out\n\n" and len(read) == 3


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("no_throttle_history")
def test_a_follow_stream_rides_out_a_database_blip_on_the_production_server(
    tcp_proxy, owner, make_agent, make_session
):
    """On the server: a follower's stream whose credentials check meets the database away goes
    on once it is back (it broke off, the follow's own polls riding the blip out)."""
    turn = running_turn(owner, make_agent, make_session, "ada")
    env = {"PANTHEON_SSE_HEARTBEAT_SECONDS": "0.5", "DB_POOL_TIMEOUT": "2"}
    server = AppServer(database_url=tcp_proxy.database_url(connection.settings_dict), env=env)
    with server, contextlib.ExitStack() as streams:
        _, lines = Follows(server).open(turn, owner, streams)
        assert next(line for line in lines if line == ": heartbeat")
        tcp_proxy.cut()
        time.sleep(2.5)  # a few heartbeat intervals: each check finds the database away
        tcp_proxy.restore()

        after = []
        deadline = time.monotonic() + 8
        with contextlib.suppress(httpx.HTTPError):
            for line in lines:
                if line == ": heartbeat":
                    after.append(line)
                if len(after) >= 4 or time.monotonic() > deadline:
                    break
        assert len(after) >= 4, "the stream broke off with the database blip"
