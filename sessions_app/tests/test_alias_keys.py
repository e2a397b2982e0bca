"""An alias's calls carry its own key, read from the variable it names, or none are sent.
litellm, given no key, finds one itself: `OPENAI_API_KEY` for an OpenAI-compatible model, which
then went to the alias's `api_base`, whatever host that is."""

import pytest

from orchestration.gateway import LiteLLMGateway
from sessions_app.models import Message, TurnStatus
from sessions_app.tests.conftest import direct_turn, point_at_stub
from usage.models import LlmCallEvent, ModelAlias

pytestmark = pytest.mark.django_db


def test_an_alias_whose_key_variable_is_unset_sends_no_call(
    owner, ada, make_session, stub, monkeypatch
):
    point_at_stub(stub, "ok", ada.model_alias)
    ModelAlias.objects.filter(alias=ada.model_alias).update(api_key_env="PANTHEON_TEST_UNSET_KEY")
    monkeypatch.delenv("PANTHEON_TEST_UNSET_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-another-providers-key")
    gateway = LiteLLMGateway(timeout_seconds=5, max_retries=2, backoff_seconds=0)

    outcome, heard = direct_turn(owner, make_session(owner, agent=ada), gateway)

    assert stub.requests == 0  # before, the call went out, with the OPENAI_API_KEY
    assert outcome.turn.status == TurnStatus.FAILED
    answer = Message.objects.get(turn=outcome.turn, role="assistant")
    assert (answer.status, answer.content) == ("error", "")
    row = LlmCallEvent.objects.get(turn=outcome.turn)
    # No request was sent: 0 attempts (it said 1), as a call too large to send says.
    assert (row.status, row.error_type, row.attempts) == ("error", "bad_request", 0)
    assert (row.input_tokens_fresh, row.output_tokens, row.credits) == (0, 0, 0)
    assert heard[-1].name == "turn_failed"


def test_an_alias_whose_key_variable_is_set_sends_that_key(
    owner, ada, make_session, stub, monkeypatch
):
    point_at_stub(stub, "ok", ada.model_alias)
    monkeypatch.setenv("STUB_API_KEY", "sk-x")
    gateway = LiteLLMGateway(timeout_seconds=5, max_retries=0, backoff_seconds=0)

    outcome, _ = direct_turn(owner, make_session(owner, agent=ada), gateway)

    assert stub.requests == 1
    assert outcome.turn.status == TurnStatus.COMPLETED


def test_a_key_variable_filled_from_a_file_sends_the_key_without_its_newline(
    owner, ada, make_session, stub, monkeypatch
):
    """A secret mounted from a file keeps the file's last newline; a key never has blanks. Sent
    as it was, the HTTP client refused the header ("Forbidden control character"): every call
    of the alias failed as a provider's error, retried, and no line named the variable."""
    point_at_stub(stub, "ok", ada.model_alias)
    monkeypatch.setenv("STUB_API_KEY", " sk-x\n")
    gateway = LiteLLMGateway(timeout_seconds=5, max_retries=1, backoff_seconds=0)

    outcome, _ = direct_turn(owner, make_session(owner, agent=ada), gateway)

    assert outcome.turn.status == TurnStatus.COMPLETED
    assert stub.requests == 1
    row = LlmCallEvent.objects.get(turn=outcome.turn)
    assert (row.status, row.attempts) == ("success", 1)


def test_a_blank_key_variable_is_an_unset_one(owner, ada, make_session, stub, monkeypatch):
    point_at_stub(stub, "ok", ada.model_alias)
    monkeypatch.setenv("STUB_API_KEY", " \n")
    gateway = LiteLLMGateway(timeout_seconds=5, max_retries=1, backoff_seconds=0)

    outcome, _ = direct_turn(owner, make_session(owner, agent=ada), gateway)

    assert stub.requests == 0
    row = LlmCallEvent.objects.get(turn=outcome.turn)
    assert (row.status, row.error_type, row.attempts) == ("error", "bad_request", 0)
