"""A call's ledger row records its provider's request id (its reply's `x-request-id`, what the
provider's support quotes), and the console's ledger search finds the call by it. No row ever
had one: the row is inserted before the call is sent, and nothing wrote the id after."""

import pytest

from orchestration.gateway import LiteLLMGateway
from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for
from sessions_app.models import TurnStatus
from sessions_app.tests.conftest import direct_turn, point_at_stub
from usage.models import LlmCallEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def gateway(monkeypatch):
    monkeypatch.setenv("STUB_API_KEY", "sk-stub")
    return LiteLLMGateway(timeout_seconds=5, max_retries=1, backoff_seconds=0)


def _found_in_the_console(staff, request_id: str) -> list:
    listed = client_for(staff).get(url(LlmCallEvent, "changelist"), {"q": request_id})
    assert listed.status_code == 200
    return [row.pk for row in listed.context["cl"].result_list]


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "streamed"])
def test_an_answered_call_records_its_providers_request_id(
    owner, ada, make_session, stub, gateway, staff, streamed
):
    point_at_stub(stub, "ok", ada.model_alias)

    outcome, _ = direct_turn(owner, make_session(owner, agent=ada), gateway, listen=streamed)

    assert outcome.turn.status == TurnStatus.COMPLETED
    [named] = stub.request_ids
    row = LlmCallEvent.objects.get(turn=outcome.turn)
    assert (row.status, row.request_id) == ("success", named)  # None before
    assert _found_in_the_console(staff, named) == [row.pk]


def test_a_failed_call_records_its_last_attempts_request_id(
    owner, ada, make_session, stub, gateway, staff
):
    point_at_stub(stub, "limited-5", ada.model_alias)  # every attempt refused 429

    outcome, _ = direct_turn(owner, make_session(owner, agent=ada), gateway, listen=False)

    assert outcome.turn.status == TurnStatus.FAILED
    first, last = stub.request_ids
    row = LlmCallEvent.objects.get(turn=outcome.turn)
    assert (row.status, row.attempts, row.request_id) == ("rate_limited", 2, last)
    assert _found_in_the_console(staff, last) == [row.pk]
    assert _found_in_the_console(staff, first) == []


def test_a_stream_failing_after_it_opened_records_its_request_id(
    owner, ada, make_session, stub, monkeypatch
):
    """The stream's reply named its request (200, headers first); the error came in its body,
    which names none: the id is the stream's."""
    monkeypatch.setenv("STUB_API_KEY", "sk-stub")
    point_at_stub(stub, "fail-5", ada.model_alias)
    gateway = LiteLLMGateway(timeout_seconds=5, max_retries=0, backoff_seconds=0)

    outcome, _ = direct_turn(owner, make_session(owner, agent=ada), gateway)

    [named] = stub.request_ids
    row = LlmCallEvent.objects.get(turn=outcome.turn)
    assert (row.status, row.request_id) == ("error", named)


def test_two_calls_may_share_a_request_id(owner, ada, make_session, stub, gateway, monkeypatch):
    """Some proxies repeat a request id; a unique index refused the second call's completion,
    which left its row pending and the call it billed unaccounted for."""
    point_at_stub(stub, "ok", ada.model_alias)
    monkeypatch.setattr(stub, "request_ids", _Repeating())
    session = make_session(owner, agent=ada)

    first, _ = direct_turn(owner, session, gateway, listen=False)
    second, _ = direct_turn(owner, session, gateway, listen=False, message="again")

    rows = LlmCallEvent.objects.filter(turn__in=[first.turn, second.turn])
    assert sorted((row.status, row.request_id) for row in rows) == [("success", "req_same")] * 2


class _Repeating(list):
    """The stub's ids, each made the same (as a proxy that repeats one)."""

    def append(self, named: str) -> None:
        super().append("req_same")
