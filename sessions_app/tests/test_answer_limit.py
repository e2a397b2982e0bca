"""A provider that ignores `max_tokens` (the stub on 127.0.0.1 does) is cut off at the answer's
limit (`orchestration.gateway.AnswerLimit`): the text up to it is kept, the provider's stream is
closed, and the step ends as an answer the provider cut at its own limit does: a success,
metered on an estimate (the provider's usage comes last and never arrives), never as free."""

import asyncio
from decimal import Decimal

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from orchestration.budget import estimate_tokens
from orchestration.gateway import AnswerLimit, LiteLLMGateway, answer_tokens_at_most
from orchestration.types import ChatMessage
from pantheon.testing.servers import AppServer, postgres_url
from pantheon.testing.sse import events
from pantheon.testing.stub_llm import stub_call
from sessions_app.models import Message, Turn, TurnStreamChunk
from sessions_app.tests.conftest import point_at_stub, wait_for
from sessions_app.tests.test_provider_replies import call_stub
from usage.models import BillingProfile, LlmCallEvent, ModelAlias

# The stub's answer, word by word ("Stub answer to «…»: one two …", 12 words, repeated): far
# more than the kernel buffers on its way, so a stream that is closed early is seen closed.
HUGE = "words-200000"


def test_a_stream_past_its_limit_is_cut_there_and_closed(stub):
    """It was read to its end: 200,000 chunks kept by litellm, 1.4 MB stored and sent on."""
    start, _ = call_stub(stub, "words-400", streamed=False)  # how the stub's answer starts

    result, heard = call_stub(stub, HUGE, streamed=True, max_output_tokens=64)

    limit = AnswerLimit(chars=64 * 16, chunks=64 * 2 + 64)
    assert (result.status, result.error_kind, result.attempts) == ("success", None, 1)
    assert result.text == "".join(heard) == start.text[: len(result.text)]
    # A chunk a word, of about five characters: the characters' bound comes first.
    assert len(result.text) == limit.chars and len(heard) < limit.chunks
    # No usage arrived: an estimate of the prompt and of what was kept, not 0, and no more
    # than the 64 tokens asked for (what was kept estimates at 388: 5/16 of a token an ASCII
    # character, 2.5 tokens each « and »).
    assert result.input_tokens_fresh > 0
    assert estimate_tokens(result.text) == 388
    assert result.output_tokens == 64
    wait_for(lambda: stub.hung_up == 1, "the stub to see its stream closed")


def test_a_stream_in_another_script_is_cut_where_its_estimate_reaches_the_limit(stub):
    """The stub quotes the question: a Chinese word of 80 characters every 12 words. Cut at 1,024
    characters, the answer stored was estimated at 1,435 tokens, more than twice what the
    turn counted it at before it was given (`answer_tokens_at_most`)."""
    question = ChatMessage("user", "天气" * 40)
    call = stub_call(stub, HUGE, (question,), max_output_tokens=64)
    heard: list[str] = []
    gateway = LiteLLMGateway(timeout_seconds=1.0, max_retries=1, backoff_seconds=0)

    result = asyncio.run(gateway.stream(call, heard.append))

    assert (result.status, result.error_kind) == ("success", None)
    assert result.text == "".join(heard) and "天气" * 40 in result.text
    assert len(result.text) < 64 * 16
    assert answer_tokens_at_most(64) - 3 < estimate_tokens(result.text) <= answer_tokens_at_most(64)
    wait_for(lambda: stub.hung_up == 1, "the stub to see its stream closed")


def test_a_stream_of_tiny_pieces_is_cut_at_its_chunks(stub):
    """What litellm keeps of a stream is a few KB a chunk, however little text each holds."""
    result, heard = call_stub(stub, f"{HUGE}-long-1", streamed=True, max_output_tokens=64)

    assert result.status == "success"
    assert len(heard) == 64 * 2 + 64 and result.text == "".join(heard)
    wait_for(lambda: stub.hung_up == 1, "the stub to see its stream closed")


def test_a_stream_of_long_pieces_is_cut_at_its_characters(stub):
    result, heard = call_stub(stub, f"{HUGE}-long-100", streamed=True, max_output_tokens=64)

    assert result.status == "success"
    assert len(result.text) == 64 * 16 and result.text == "".join(heard)
    assert len(heard) == 11  # ten words of 100 characters and a part of the eleventh
    wait_for(lambda: stub.hung_up == 1, "the stub to see its stream closed")


def test_an_answer_within_its_limit_is_read_to_its_end_with_the_providers_usage(stub):
    result, _ = call_stub(stub, "words-100", streamed=True, max_output_tokens=64)

    assert (result.status, result.output_tokens) == ("success", 100)  # the stub's own count
    assert len(result.text.split()) == 100
    assert stub.hung_up == 0


def test_a_whole_answer_past_its_limit_is_cut_and_keeps_the_providers_usage(stub):
    result, _ = call_stub(stub, "words-20000-long-100", streamed=False, max_output_tokens=64)

    assert result.status == "success"
    assert len(result.text) == 64 * 16
    assert result.output_tokens == 20_000  # what the provider says it spoke, and bills


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("no_throttle_history")
def test_a_streamed_turn_whose_provider_ignores_max_tokens_completes_with_the_answer_cut(
    owner, ada, make_session, stub
):
    ModelAlias.objects.filter(alias=ada.model_alias).update(max_output_tokens=64)
    BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("1000"))  # a hold
    point_at_stub(stub, HUGE, ada.model_alias)
    session = make_session(owner, agent=ada)
    headers = {
        "Authorization": f"Token {Token.objects.create(user=owner).key}",
        "Accept": "text/event-stream",
    }
    env = {"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "sk-x"}
    with AppServer(database_url=postgres_url(connection.settings_dict), env=env) as server:
        url = f"{server.url}/api/v1/sessions/{session.pk}/turns"
        with httpx.stream(
            "POST", url, json={"message": "hello"}, headers=headers, timeout=60
        ) as response:
            assert response.status_code == 201
            streamed = list(events(response))

    limit = AnswerLimit(chars=64 * 16, chunks=64 * 2 + 64)
    deltas = [e.data["text"] for e in streamed if e.name == "step_delta"]
    assert len(deltas) == limit.chunks
    answer = Message.objects.get(role="assistant")
    assert (answer.status, answer.error_code) == ("ok", "")
    assert answer.content == "".join(deltas) and len(answer.content) <= limit.chars
    assert answer.content.startswith("Stub answer to «hello»: one two")
    names = [e.name for e in streamed]
    assert names[-2:] == ["step_completed", "turn_completed"]
    assert streamed[-2].data["content"] == answer.content
    body = streamed[-1].data
    assert body["status"] == "completed" and body["messages"][1]["content"] == answer.content
    turn = Turn.objects.get()
    assert turn.status == "completed" and not TurnStreamChunk.objects.exists()
    row = LlmCallEvent.objects.get()
    assert (row.status, row.error_type) == ("success", "")
    assert row.input_tokens_fresh > 0 and row.credits > 0
    # Billed as the 64 tokens the call asked for, not the estimate of the text kept (320):
    # within what the turn held against the user's cap for it.
    assert estimate_tokens(answer.content) > 64 and row.output_tokens == 64
    assert 0 < row.credits <= turn.reserved_credits
    assert body["usage"]["output_tokens"] == row.output_tokens
    # The provider's stream was closed, not read to its end.
    wait_for(lambda: stub.hung_up == 1, "the stub to see its stream closed")
