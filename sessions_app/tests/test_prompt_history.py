"""The history a prompt carries starts with a user's message.

Some providers (Gemini, older Anthropic models) refuse a conversation whose first message
after the system prompt is the model's, and any model reads an answer without its question.
Pruning dropped the oldest messages one at a time, and a summary folded in the oldest messages
that fit: either could stop between a question and its answers."""

import pytest
from asgiref.sync import async_to_sync

from conftest import FakeGateway
from sessions_app.models import Message, SessionSummary, TurnContextAudit
from sessions_app.selectors import session_for_turn
from sessions_app.turns import turn_run
from usage.models import ModelAlias
from usage.services import model_alias_set

pytestmark = pytest.mark.django_db


def roles(messages) -> list[str]:
    return [message["role"] if isinstance(message, dict) else message.role for message in messages]


def test_pruning_leaves_out_whole_exchanges(
    owner_client, owner, ada, make_session, post_turn, provider_requests, settings
):
    """A 2,000-token window answering up to 256 keeps 720 tokens of prompt, 648 below the
    prune line. The fourth turn's whole prompt is about 700: the first question was pruned
    and its answer went first, [system, assistant, user, assistant, user, assistant, user]."""
    ModelAlias.objects.filter(alias="qwen").update(enabled=False)
    settings.PANTHEON_SUMMARIZER_MODEL_ALIAS = "qwen"  # no summary: only pruning
    model_alias_set(alias="deepseek", context_window=2000, max_output_tokens=256)
    session = make_session(owner, agent=ada)

    for index in range(1, 5):
        message = f"Turn {index}: " + "lorem ipsum dolor sit amet " * 14
        response = post_turn(owner_client, session, message)
        assert response.status_code == 201, response.json()

    prompt = provider_requests[-1]["messages"]
    assert roles(prompt) == ["system", "user", "assistant", "user", "assistant", "user"]
    assert prompt[1]["content"].startswith("Turn 2: ")
    assert prompt[-1]["content"].startswith("Turn 4: ")
    audit = TurnContextAudit.objects.get(turn__turn_index=4)
    assert (audit.pruned, audit.history_messages_loaded, audit.history_messages_pruned) == (
        True,
        6,
        2,
    )
    assert audit.estimated_tokens_after <= 648 < audit.estimated_tokens_before


def test_a_summary_folds_in_whole_exchanges(owner, ada, make_session, settings):
    """The eighth turn's summary has room (648 tokens on a 2,000-token qwen) for the first
    exchange and the second question, not the second answer (about 700 tokens). It folded in
    the question alone: the ninth turn's history began with that long answer, its question
    held by the summary only."""
    settings.PANTHEON_SUMMARIZER_MODEL_ALIAS = "qwen"
    model_alias_set(alias="qwen", context_window=2000, max_output_tokens=256)
    session = make_session(owner, agent=ada)
    long_answer = "The second answer, at length. " + "details " * 270
    gateway = FakeGateway()
    reply = gateway.reply_for

    def reply_for(call):
        if call.purpose == "agent" and call.messages[-1].content == "question 2":
            return long_answer
        return reply(call)

    gateway.reply_for = reply_for  # type: ignore[method-assign]

    for index in range(1, 10):
        async_to_sync(turn_run)(
            session=session_for_turn(user=owner, session_id=session.pk),
            user=owner,
            message=f"question {index}",
            gateway=gateway,
        )

    second_answer = Message.objects.get(session=session, content=long_answer)
    summary = SessionSummary.objects.get(session=session)
    assert summary.turn.turn_index == 8
    assert summary.to_sequence == second_answer.sequence - 2  # the first exchange's answer
    prompt = gateway.calls_for("agent")[-1].messages
    assert roles(prompt)[:3] == ["system", "user", "assistant"]
    assert [message.content for message in prompt[1:3]] == ["question 2", long_answer]
    audit = TurnContextAudit.objects.get(turn__turn_index=9)
    assert (audit.summary_used, audit.history_messages_pruned) == (True, 0)


def test_a_room_with_as_many_seats_as_the_history_read_keeps_its_last_exchange(
    owner, make_agent, make_room, make_session, settings
):
    """The read of the history (PANTHEON_CONTEXT_HISTORY_LIMIT messages, 4 here) held only the
    four seats' answers to the first question, not the question: the second turn's prompts had
    no history at all, though it fitted many times over."""
    settings.PANTHEON_CONTEXT_HISTORY_LIMIT = 4
    agents = [make_agent(owner, key) for key in ("ada", "bob", "cleo", "dan")]
    session = make_session(owner, room=make_room(owner, agents, mode="roundtable"))
    gateway = FakeGateway()

    for message in ("Remember the codeword PLUM.", "What was the codeword?"):
        async_to_sync(turn_run)(
            session=session_for_turn(user=owner, session_id=session.pk),
            user=owner,
            message=message,
            gateway=gateway,
        )

    first_of_second_turn = gateway.calls_for("agent")[4].messages
    assert roles(first_of_second_turn) == ["system", "user", *["assistant"] * 4, "user"]
    assert first_of_second_turn[1].content == "Remember the codeword PLUM."
    audit = TurnContextAudit.objects.filter(turn__turn_index=2).first()
    assert (audit.history_messages_loaded, audit.history_messages_pruned) == (5, 0)
