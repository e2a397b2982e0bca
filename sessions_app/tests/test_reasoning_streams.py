"""A reasoning model (DeepSeek's reasoner, say) streams its reasoning before its answer
(`reasoning_content`, no text); the stub plays one (`reasoning-<n>` in its model name). The
reasoning is neither shown nor stored, but it is the provider at work: it keeps the turn from
being taken for a dead one, and it does not use up the chunks its answer may take."""

import asyncio
import threading
import time

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from conftest import FakeGateway
from orchestration import gateway as gateway_module
from orchestration.gateway import AnswerLimit, LiteLLMGateway
from pantheon.testing.servers import AppServer, postgres_url
from pantheon.testing.sse import events
from sessions_app.models import Message, Turn, TurnStatus
from sessions_app.selectors import session_for_turn
from sessions_app.tests.conftest import point_at_stub, wait_for
from sessions_app.tests.test_provider_replies import stub_call
from sessions_app.turns import TurnListener, turn_run
from usage.models import LlmCallEvent

# The stub's answer to MESSAGES: twelve words.
ANSWER = "Stub answer to «Hello there, friend»: one two three four five six"


def call_stub(stub, model: str, *, streamed: bool, max_output_tokens: int = 1024):
    """The stub's answer through the gateway: (result, the text pieces heard, how many chunks
    of reasoning were heard)."""
    call = stub_call(stub, model, max_output_tokens=max_output_tokens)
    gateway = LiteLLMGateway(timeout_seconds=5.0, max_retries=0)
    heard: list[str] = []
    reasoned: list[None] = []
    if streamed:
        result = asyncio.run(gateway.stream(call, heard.append, lambda: reasoned.append(None)))
    else:
        result = asyncio.run(gateway.complete(call))
    return result, heard, len(reasoned)


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_a_reasoning_models_answer_is_its_text_and_its_usage_counts_the_reasoning(stub, streamed):
    result, heard, reasoned = call_stub(stub, "reasoning-5", streamed=streamed)

    assert (result.status, result.text) == ("success", ANSWER)
    assert "".join(heard) == (ANSWER if streamed else "")  # not a word of the reasoning
    assert reasoned == (5 if streamed else 0)
    assert result.output_tokens == 12 + 5  # the provider bills its reasoning as output


def test_a_long_reasoning_phase_does_not_use_up_the_chunks_of_a_short_answer(stub):
    """Reasoning chunks counted with the answer's: 96 of them (16 tokens' worth) and the
    stream was cut before the answer's first word, a success with no text."""
    result, heard, reasoned = call_stub(stub, "reasoning-300", streamed=True, max_output_tokens=16)

    assert AnswerLimit(chars=16 * 16, chunks=16 * 2 + 64).chunks < 300
    assert (result.status, result.text, reasoned) == ("success", ANSWER, 300)
    assert "".join(heard) == ANSWER
    assert result.output_tokens == 12 + 300  # read to its end: the provider's own usage
    assert stub.hung_up == 0


def test_a_provider_that_reasons_without_end_is_cut_at_its_reasoning_limit(stub, monkeypatch):
    """The bound litellm's memory needs (it keeps every chunk), on the reasoning too."""
    monkeypatch.setattr(gateway_module, "REASONING_TOKENS", 64)

    result, heard, reasoned = call_stub(
        stub, "reasoning-200000", streamed=True, max_output_tokens=16
    )

    assert (result.status, result.error_kind, result.text, heard) == ("success", None, "", [])
    assert reasoned == 64 * 2 + 64
    wait_for(lambda: stub.hung_up == 1, "the stub to see its stream closed")


class ReasoningGateway(FakeGateway):
    """The fake provider's answer after `thoughts` chunks of reasoning, all at once."""

    def __init__(self, thoughts: int) -> None:
        super().__init__()
        self.thoughts = thoughts

    async def stream(self, call, on_delta, on_reasoning=None):
        for _ in range(self.thoughts):
            if on_reasoning is not None:
                on_reasoning()
        return await super().stream(call, on_delta)


@pytest.mark.django_db
def test_reasoning_writes_nothing_until_progress_is_due(owner, ada, make_session, settings):
    """Progress moves at most every tenth of the stale limit: a thousand chunks of reasoning
    within it cost the turn no statement (one a chunk would be a thousand)."""
    settings.PANTHEON_TURN_STALE_SECONDS = 600

    def statements(gateway: FakeGateway) -> int:
        session = make_session(owner, agent=ada)
        heard: list = []
        with CaptureQueriesContext(connection) as queries:
            outcome = async_to_sync(turn_run)(
                session=session_for_turn(user=owner, session_id=session.pk),
                user=owner,
                message="hello",
                gateway=gateway,
                listener=TurnListener(send=heard.append),
            )
        assert outcome.turn.status == TurnStatus.COMPLETED
        assert heard[-1].name == "turn_completed"
        return len(queries)

    statements(FakeGateway())  # the user's first turn also opens their month's usage row
    assert statements(ReasoningGateway(thoughts=1000)) == statements(FakeGateway())


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("no_throttle_history")
def test_a_turn_whose_provider_reasons_past_the_stale_limit_is_not_taken_for_a_stale_one(
    owner, ada, make_session, stub
):
    """Only text moved a streamed turn's progress: four seconds of reasoning under a stale
    limit of two, and the session's next turn interrupted this one (201), whose answer and
    usage were then thrown away. Now the next turn is refused (409) as for any running turn,
    and this one completes with its answer and its call on the ledger."""
    point_at_stub(stub, "stream-100-reasoning-40", ada.model_alias)  # 4 s, then 12 words
    session = make_session(owner, agent=ada)
    token = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    url = f"/api/v1/sessions/{session.pk}/turns"
    streamed: dict[str, list] = {}
    env = {
        "PANTHEON_LLM_BACKEND": "live",
        "STUB_API_KEY": "sk-x",
        "PANTHEON_TURN_STALE_SECONDS": "2",
    }

    def stream(base: str) -> None:
        headers = {**token, "Accept": "text/event-stream"}
        body = {"message": "Hello there, friend"}
        with httpx.stream("POST", base + url, json=body, headers=headers, timeout=60) as response:
            assert response.status_code == 201
            streamed["live"] = list(events(response))

    with AppServer(database_url=postgres_url(connection.settings_dict), env=env) as server:
        first = threading.Thread(target=stream, args=(server.url,))
        first.start()
        wait_for(lambda: Turn.objects.exists(), "the first turn to be claimed")
        time.sleep(3)  # past the stale limit, in the middle of the reasoning
        assert not Message.objects.filter(role="assistant").exists()
        second = httpx.post(server.url + url, json={"message": "again"}, headers=token, timeout=30)
        first.join(timeout=30)

    assert second.status_code == 409, second.text
    assert second.json() == {
        "detail": "Turn creation conflicted with concurrent writes. Please retry."
    }
    live = streamed["live"]
    assert [e.name for e in live][-2:] == ["step_completed", "turn_completed"]
    assert "".join(e.data["text"] for e in live if e.name == "step_delta") == ANSWER
    turn = Turn.objects.get()
    assert turn.status == "completed"
    answer = Message.objects.get(role="assistant")
    assert (answer.status, answer.content) == ("ok", ANSWER)
    row = LlmCallEvent.objects.get()
    assert (row.status, row.turn_id, row.output_tokens) == ("success", turn.pk, 12 + 40)
    assert row.credits > 0 and turn.credits == row.credits
