"""One user's follow streams (`GET turns/{id}/events`) on one worker are bounded
(`PANTHEON_MAX_FOLLOWS_PER_USER`): followers are throttled by no rate, and each held a place
among the worker's requests for as long as its turn ran, so one user could fill a worker
(the security reviewer's note). A live server on PostgreSQL: the place is given back when the
stream's client hangs up, where Django closes no response."""

import contextlib
import time

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.capacity import Capacity
from pantheon.testing.servers import AppServer, postgres_url
from sessions_app.models import Turn
from sessions_app.tests.conftest import direct_turn_in_flight


def running_turn(user, make_agent, make_session, key: str = "ada") -> Turn:
    """A turn no worker runs: its followers get heartbeats until the test ends."""
    agent = make_agent(user, key)
    return direct_turn_in_flight(user, agent, make_session(user, agent=agent))


class Follows:
    """Follow streams opened on `server`, each kept open until `streams` closes."""

    def __init__(self, server: AppServer):
        self.server = server

    def open(self, turn: Turn, user, streams: contextlib.ExitStack):
        """(the response, its lines' reader: None when refused)."""
        client = streams.enter_context(httpx.Client(timeout=30))
        response = streams.enter_context(
            client.stream(
                "GET",
                f"{self.server.url}/api/v1/turns/{turn.pk}/events",
                headers={
                    "Authorization": f"Token {Token.objects.get_or_create(user=user)[0].key}",
                    "Accept": "text/event-stream",
                },
            )
        )
        if response.status_code != 200:
            response.read()
            return response, None
        # Its first event: the stream is under way. The lines' reader is kept with the
        # stream: dropped, it would close the connection.
        lines = response.iter_lines()
        streams.callback(lines.close)
        assert next(lines).startswith("id: ")
        return response, lines

    def status(self, turn: Turn, user, streams: contextlib.ExitStack) -> int:
        return self.open(turn, user, streams)[0].status_code


def ends_within(lines, seconds: float) -> bool:
    """Whether a follow stream's reader reaches its end within about `seconds`."""
    deadline = time.monotonic() + seconds
    return all(time.monotonic() <= deadline for _ in lines)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("no_throttle_history")
def test_a_user_follows_at_most_the_limit_and_a_closed_stream_frees_its_place(
    owner, outsider, make_agent, make_session
):
    mine = running_turn(owner, make_agent, make_session, "ada")
    also_mine = running_turn(owner, make_agent, make_session, "grace")
    third = running_turn(owner, make_agent, make_session, "hopper")
    theirs = running_turn(outsider, make_agent, make_session)
    server = AppServer(
        database_url=postgres_url(connection.settings_dict),
        env={"PANTHEON_MAX_FOLLOWS_PER_USER": "2"},
    ).start()
    follows = Follows(server)

    try:
        with contextlib.ExitStack() as kept:
            assert follows.status(mine, owner, kept) == 200
            assert follows.status(also_mine, owner, kept) == 200
            with contextlib.ExitStack() as refused_streams:
                refused, _ = follows.open(third, owner, refused_streams)
                assert refused.status_code == 429
                assert refused.headers["Retry-After"] == "5"
                assert refused.json()["detail"] == {
                    "code": "too_many_follows",
                    "message": "You already hold 2 streams of turns' events open on this "
                    "server, the most one user may: close a stream you no longer read, then "
                    "retry.",
                }
            # Another user's places are their own.
            with contextlib.ExitStack() as other:
                assert follows.status(theirs, outsider, other) == 200

            with contextlib.ExitStack() as closing:
                assert follows.status(third, owner, closing) == 429
            # One of the two closes: its place comes back once the server hears it hang up.
            kept.close()
        deadline = time.monotonic() + 15
        while True:
            with contextlib.ExitStack() as again:
                if follows.status(third, owner, again) == 200:
                    break
            assert time.monotonic() < deadline, "the closed streams' places never came back"
            time.sleep(0.2)
    finally:
        server.stop()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("no_throttle_history")
def test_a_follow_of_a_turn_already_followed_takes_the_oldest_streams_place(
    owner, make_agent, make_session
):
    """A mobile client whose network dropped its follow streams without a word (heartbeats
    into a dead connection's buffers fail only when TCP gives up) reconnected to the same turn
    until it was refused `too_many_follows` for as long as the turn ran: 20 dropped streams
    locked its user out. A follow of a turn the user follows already, at the limit, takes the
    place of their oldest stream of it, which ends; another turn's is still refused."""
    mine = running_turn(owner, make_agent, make_session, "ada")
    other = running_turn(owner, make_agent, make_session, "grace")
    third = running_turn(owner, make_agent, make_session, "hopper")
    server = AppServer(
        database_url=postgres_url(connection.settings_dict),
        env={"PANTHEON_MAX_FOLLOWS_PER_USER": "2"},
    ).start()
    follows = Follows(server)

    try:
        with contextlib.ExitStack() as streams:
            _, dropped = follows.open(mine, owner, streams)  # its reader stops reading
            assert follows.status(other, owner, streams) == 200

            assert follows.status(mine, owner, streams) == 200

            assert ends_within(dropped, 10)
            # Two places held still, the new stream's and the other turn's: a third turn's
            # follow is refused.
            assert follows.status(third, owner, streams) == 429
    finally:
        server.stop()


def test_what_a_request_gives_back_is_given_back_however_it_ends():
    capacity = Capacity()
    given = []

    assert capacity.at_end(lambda: given.append("outside")) is False  # no request held
    with pytest.raises(RuntimeError), capacity.hold():
        assert capacity.at_end(lambda: given.append("first")) is True
        capacity.at_end(lambda: given.append("second"))
        raise RuntimeError("the stream broke")

    assert given == ["first", "second"]
    assert capacity.in_flight == 0
    assert capacity.at_end(lambda: None) is False


@pytest.mark.django_db
def test_a_head_request_for_a_turns_events_is_refused(
    owner, owner_client, make_agent, make_session
):
    """Answered by `get`, it was a stream no one read, holding a follow place and the worker's
    until the turn ended (the second reviewer's catch)."""
    turn = running_turn(owner, make_agent, make_session)

    response = owner_client.head(f"/api/v1/turns/{turn.pk}/events", HTTP_ACCEPT="text/event-stream")

    assert response.status_code == 405
