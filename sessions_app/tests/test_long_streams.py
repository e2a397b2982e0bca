"""Long streamed answers on a real server: gunicorn on PostgreSQL, the provider stub on 127.0.0.1.

While a step streams, its text so far is saved every `PANTHEON_STREAM_SAVE_SECONDS` for replays
from other hosts. Each save rewrote the whole text (an UPDATE of one row, its TOAST value written
anew), so the WAL an answer wrote grew with the square of its length: 32 KB streamed at a steady
pace wrote 11 MB. Each save now appends the words heard since the last one.

A finished step was replayed (`GET turns/{id}/events`) as one `step_delta` of its whole text: a
client on a slow link that drops every few seconds never got it whole, and each reconnect with
`Last-Event-ID` asked for it again from its start. It now comes as deltas of at most
`REPLAY_DELTA_CHARS` characters, each with its own id to resume after."""

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, postgres_url
from pantheon.testing.sse import events
from sessions_app.events import REPLAY_DELTA_CHARS, TURN_ENDED_ID
from sessions_app.models import Message
from sessions_app.tests.conftest import point_at_stub
from usage.models import ModelAlias

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("no_throttle_history"),
]

# 400 different words of 63 characters and a space: 25.6 KB in about four seconds.
LONG_ANSWER = "stream-10-words-400-long-63-varied"


@pytest.fixture
def session(owner, make_agent, make_session):
    ModelAlias.objects.filter(alias="llama").update(max_output_tokens=8192, context_window=131072)
    return make_session(owner, agent=make_agent(owner, "ada", model_alias="llama"))


@pytest.fixture
def auth(owner) -> dict:
    return {"Authorization": f"Token {Token.objects.create(user=owner).key}"}


def _server(**env: str) -> AppServer:
    return AppServer(
        database_url=postgres_url(connection.settings_dict),
        env={"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub-key", **env},
    )


def _post(base: str, session, auth: dict) -> list:
    with httpx.stream(
        "POST",
        f"{base}/api/v1/sessions/{session.pk}/turns",
        json={"message": "tell me everything"},
        headers={**auth, "Accept": "text/event-stream"},
        timeout=120,
    ) as response:
        assert response.status_code == 201
        return list(events(response))


def _replay(base: str, turn_id: str, auth: dict, *, last_event_id: int | None = None) -> list:
    headers = {**auth, "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    with httpx.stream(
        "GET", f"{base}/api/v1/turns/{turn_id}/events", headers=headers, timeout=60
    ) as response:
        assert response.status_code == 200
        return list(events(response))


class SavedText:
    """Counts the bytes of answer text the stream's saves write into the database (the TOAST
    values PostgreSQL writes, and logs to its WAL, in full for each row written): a trigger on
    each table of streamed text, whatever its shape."""

    def __enter__(self) -> "SavedText":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT table_name FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name LIKE 'sessions_app_turnstream%%' "
                "AND column_name = 'text'"
            )
            self.tables = [row[0] for row in cursor.fetchall()]
            assert self.tables
            cursor.execute("CREATE TABLE saved_text_log (bytes integer NOT NULL)")
            cursor.execute(
                "CREATE FUNCTION saved_text_count() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN INSERT INTO saved_text_log VALUES (octet_length(NEW.text)); "
                "RETURN NEW; END $$"
            )
            for table in self.tables:
                cursor.execute(
                    f"CREATE TRIGGER saved_text_count AFTER INSERT OR UPDATE ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION saved_text_count()"
                )
        return self

    def saves(self) -> tuple[int, int]:
        """(rows written, bytes of text they held)."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*), coalesce(sum(bytes), 0) FROM saved_text_log")
            count, total = cursor.fetchone()
        return count, total

    def __exit__(self, *exc: object) -> None:
        with connection.cursor() as cursor:
            for table in self.tables:
                cursor.execute(f"DROP TRIGGER saved_text_count ON {table}")
            cursor.execute("DROP FUNCTION saved_text_count()")
            cursor.execute("DROP TABLE saved_text_log")


def test_a_long_answers_saves_write_its_text_about_once(stub, session, auth):
    """25.6 KB streamed over four seconds, saved every 50 ms: the saves wrote about 80 rows. They
    wrote 1.1 MB of text before (each the whole text so far: 40 times the answer, and 11 MB of
    WAL for 32 KB streamed at a third of this pace); they now write each word once."""
    point_at_stub(stub, LONG_ANSWER, "llama")
    with _server(PANTHEON_STREAM_SAVE_SECONDS="0.05") as server, SavedText() as saved:
        heard = _post(server.url, session, auth)
        count, written = saved.saves()

    assert heard[-1].name == "turn_completed"
    answer = Message.objects.get(session=session, role="assistant").content
    assert len(answer) == 400 * 64 - 1
    streamed = "".join(event.data["text"] for event in heard if event.name == "step_delta")
    assert streamed == answer
    assert count >= 20, "the saves kept their pace"
    assert written <= len(answer.encode()) + 1024, (count, written)


def test_a_finished_long_answer_replays_in_bounded_deltas_resumable_in_the_middle(
    stub, session, auth
):
    """A 25.6 KB answer replays as 25 deltas of at most 1,024 characters, each with the id of
    the character it ends at; a client that resumes in the middle of one (its connection dropped
    there) gets the rest of the text, whole, and every replay numbers them alike."""
    point_at_stub(stub, LONG_ANSWER.replace("stream-10", "stream-0"), "llama")
    with _server() as server:
        heard = _post(server.url, session, auth)
        turn_id = heard[0].data["turn_id"]
        replay = _replay(server.url, turn_id, auth)
        again = _replay(server.url, turn_id, auth)
        answer = Message.objects.get(session=session, role="assistant").content

        deltas = [event for event in replay if event.name == "step_delta"]
        assert len(deltas) == -(-len(answer) // REPLAY_DELTA_CHARS) == 25
        assert all(len(event.data["text"]) <= REPLAY_DELTA_CHARS for event in deltas)
        assert "".join(event.data["text"] for event in deltas) == answer
        ids = [event.id for event in replay]
        assert ids == sorted(set(ids)) and ids[-1] == TURN_ENDED_ID
        assert [(e.id, e.name, e.data) for e in again] == [(e.id, e.name, e.data) for e in replay]

        # Dropped after 2,500 characters: the third delta's middle.
        started = next(event for event in replay if event.name == "step_started")
        resumed = _replay(server.url, turn_id, auth, last_event_id=started.id + 2500)

    rest = [event for event in resumed if event.name == "step_delta"]
    assert rest[0].id == started.id + 3 * REPLAY_DELTA_CHARS
    assert answer[:2500] + "".join(event.data["text"] for event in rest) == answer
    assert [event.name for event in resumed][-2:] == ["step_completed", "turn_completed"]
