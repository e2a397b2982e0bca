"""Following a running turn from the database (`GET turns/{id}/events` on any host): each poll
gives what the client has not seen, and a poll while the turn stores nothing costs one read."""

import pytest
from django.utils import timezone

from sessions_app import events
from sessions_app.models import DIRECT_MODE, Message, Turn, TurnStatus, TurnStream
from usage.models import CallPurpose, CallStatus, LlmCallEvent
from usage.services import usage_call_open

pytestmark = pytest.mark.django_db


@pytest.fixture
def running_turn(owner, make_agent, make_session):
    """A direct turn whose agent call is in flight: the turn, the user's message and the call's
    pending ledger row, as the claim commits them."""
    agent = make_agent(owner, "ada")
    session = make_session(owner, agent=agent)
    turn = Turn.objects.create(
        session=session,
        turn_index=1,
        mode=DIRECT_MODE,
        status=TurnStatus.RUNNING,
        user_input="hello?",
        roster=[{"agent_key": "ada", "name": agent.name, "model_alias": agent.model_alias}],
        progress_at=timezone.now(),
    )
    Message.objects.create(session=session, turn=turn, sequence=1, role="user", content="hello?")
    usage_call_open(
        user=owner,
        model_alias=agent.model_alias,
        pricing=None,
        purpose=CallPurpose.AGENT,
        session_id=session.pk,
        turn_id=turn.pk,
        agent_key="ada",
    )
    return turn


def _stream(turn: Turn, text: str) -> None:
    TurnStream.objects.update_or_create(
        turn=turn, defaults={"sequence": 2, "text": text, "updated_at": timezone.now()}
    )


def _answer(turn: Turn, content: str) -> None:
    """The agent's answer as the step stores it."""
    Message.objects.create(
        session=turn.session,
        turn=turn,
        sequence=2,
        role="assistant",
        agent_key="ada",
        agent_name="Ada",
        content=content,
    )


def _names(news: list) -> list[str]:
    return [event.name for event in news]


def test_a_follower_gets_each_event_once_and_an_idle_poll_costs_one_read(
    running_turn, django_assert_num_queries
):
    follower = events.TurnFollower(running_turn)

    news, finished = follower.poll()
    assert _names(news) == ["turn_started", "step_started"] and not finished

    # The provider is thinking: nothing stored, nothing sent, one indexed read.
    with django_assert_num_queries(1):
        assert follower.poll() == ([], False)

    _stream(running_turn, "Hel")
    news, _ = follower.poll()
    assert [(event.name, event.data["text"]) for event in news] == [("step_delta", "Hel")]
    _stream(running_turn, "Hello")
    news, _ = follower.poll()
    assert [event.data["text"] for event in news] == ["lo"]
    with django_assert_num_queries(1):
        assert follower.poll() == ([], False)

    # The step commits its message and the turn ends: the rest of the text, then the end.
    _answer(running_turn, "Hello there")
    TurnStream.objects.filter(turn=running_turn).delete()
    assert Turn.objects.filter(pk=running_turn.pk).end(TurnStatus.COMPLETED) == 1
    news, finished = follower.poll()
    assert _names(news) == ["step_delta", "step_completed", "turn_completed"] and finished
    assert news[0].data["text"] == " there"
    assert news[-1].data["status"] == "completed"


def test_a_step_stored_without_streaming_is_seen_at_the_next_poll(running_turn):
    """A JSON turn saves no stream: its step's commit alone (progress_at) must wake a follower."""
    follower = events.TurnFollower(running_turn)
    follower.poll()
    _answer(running_turn, "Done.")
    LlmCallEvent.objects.filter(turn=running_turn).update(status=CallStatus.SUCCESS)
    Turn.objects.filter(pk=running_turn.pk).update(progress_at=timezone.now())

    news, finished = follower.poll()
    assert _names(news) == ["step_delta", "step_completed"] and not finished


def test_a_follower_resumes_after_the_last_event_id_it_was_given(running_turn):
    _stream(running_turn, "Hello")
    first = events.TurnFollower(running_turn)
    delta = next(event for event in first.poll()[0] if event.name == "step_delta")

    resumed = events.TurnFollower(running_turn, last_event_id=delta.id - 2)
    news, _ = resumed.poll()
    assert [(event.name, event.data["text"]) for event in news] == [("step_delta", "lo")]
