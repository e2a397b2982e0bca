"""Every turn mode end to end through the real gateway and the offline demo provider.

No fake gateway here: litellm, the `pantheon_demo` provider, retries and error mapping all run
as they do on a fresh machine with `PANTHEON_LLM_BACKEND=demo`.
"""

from decimal import Decimal

import pytest
from django.conf import settings

from rooms.models import RoomMode
from usage.models import LlmCallEvent, ModelPrice

pytestmark = pytest.mark.django_db

ROLES = {
    "ada": "Mathematician who checks proofs.",
    "grace": "Compiler engineer who reviews code.",
    "linus": "Kernel maintainer for systems.",
}


@pytest.fixture(autouse=True)
def demo_backend():
    assert settings.PANTHEON_LLM_BACKEND == "demo"


@pytest.fixture
def agents(owner, make_agent):
    return [make_agent(owner, key, role_prompt=role) for key, role in ROLES.items()]


@pytest.fixture
def room_session(owner, agents, make_room, make_session):
    def make(mode: str):
        room = make_room(owner, agents=agents, mode=mode)
        return make_session(owner, room=room)

    return make


def answers(body) -> list[dict]:
    return [message for message in body["messages"] if message["role"] == "assistant"]


def events_of(body, **filters):
    return LlmCallEvent.objects.filter(turn_id=body["id"], **filters).order_by("created_at")


def assert_metered(event) -> None:
    assert event.status == "success"
    assert event.provider == "pantheon_demo"
    assert event.input_tokens_fresh > 0
    assert event.output_tokens > 0
    assert event.attempts == 1
    assert event.credits > 0
    # The demo reports no price of its own; the seeded price list prices its calls.
    price = ModelPrice.objects.get(
        pricing_version__name="2026-11 list", model_alias__alias=event.model_alias
    )
    cached_price = price.cached_input_usd_per_mtok or price.input_usd_per_mtok
    usd = (
        event.input_tokens_fresh * price.input_usd_per_mtok
        + event.input_tokens_cached * cached_price
        + event.output_tokens * price.output_usd_per_mtok
    ) / Decimal(1_000_000)
    assert event.priced is True
    assert event.pricing_version_id == price.pricing_version_id
    assert event.provider_cost_usd == usd.quantize(Decimal("1E-10"))


# --- manual -------------------------------------------------------------------------------------


def test_manual_answers_the_tagged_agents_in_tag_order(
    owner_client, room_session, post_turn, owner
):
    session = room_session(RoomMode.MANUAL)

    response = post_turn(owner_client, session, "@grace @ada how do we test the parser?")

    assert response.status_code == 201
    body = response.json()
    assert (body["mode"], body["status"], body["routing"]) == ("manual", "completed", None)
    replies = answers(body)
    assert [m["agent_key"] for m in replies] == ["grace", "ada"]
    assert [m["agent_name"] for m in replies] == ["Grace", "Ada"]
    assert all(m["status"] == "ok" and m["error_code"] == "" for m in replies)
    assert replies[0]["content"].startswith("[Grace @grace]")
    assert replies[1]["content"].startswith("[Ada @ada]")
    assert all("how do we test the parser?" in m["content"] for m in replies)
    assert [m["sequence"] for m in body["messages"]] == [1, 2, 3]

    events = list(events_of(body))
    assert [e.agent_key for e in events] == ["grace", "ada"]
    for event in events:
        assert event.purpose == "agent"
        assert_metered(event)
    assert body["usage"]["llm_calls"] == 2
    assert body["usage"]["input_tokens"] == sum(
        e.input_tokens_fresh + e.input_tokens_cached for e in events
    )
    assert body["usage"]["output_tokens"] == sum(e.output_tokens for e in events)
    assert Decimal(body["usage"]["credits"]) == sum(e.credits for e in events)

    # Deterministic: the same input in a fresh session gives the same texts.
    again = post_turn(
        owner_client, room_session(RoomMode.MANUAL), "@grace @ada how do we test the parser?"
    )
    assert again.status_code == 201
    assert [m["content"] for m in answers(again.json())] == [m["content"] for m in replies]
    assert again.json()["usage"] == body["usage"]


def test_manual_without_a_valid_tag_is_422_and_calls_nothing(owner_client, room_session, post_turn):
    session = room_session(RoomMode.MANUAL)

    response = post_turn(owner_client, session, "@nobody are you there?")

    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "no_valid_tagged_agents"
    assert LlmCallEvent.objects.count() == 0


# --- roundtable ---------------------------------------------------------------------------------


def test_roundtable_answers_every_agent_in_position_order(owner_client, room_session, post_turn):
    session = room_session(RoomMode.ROUNDTABLE)

    response = post_turn(owner_client, session, "What should we build first?")

    assert response.status_code == 201
    body = response.json()
    assert (body["mode"], body["status"]) == ("roundtable", "completed")
    replies = answers(body)
    assert [m["agent_key"] for m in replies] == ["ada", "grace", "linus"]
    for message in replies:
        assert message["status"] == "ok"
        assert f"@{message['agent_key']}]" in message["content"]

    events = list(events_of(body))
    assert [e.agent_key for e in events] == ["ada", "grace", "linus"]
    for event in events:
        assert event.purpose == "agent"
        assert_metered(event)
    # Later agents see earlier outputs of the same turn: their prompts grow.
    prompts = [e.input_tokens_fresh for e in events]
    assert prompts[0] < prompts[1] < prompts[2]
    assert body["usage"]["llm_calls"] == 3


# --- orchestrator -------------------------------------------------------------------------------


def test_orchestrator_routes_to_the_agent_the_message_names(owner_client, room_session, post_turn):
    session = room_session(RoomMode.ORCHESTRATOR)

    response = post_turn(owner_client, session, "Grace, please review this")

    assert response.status_code == 201
    body = response.json()
    assert (body["mode"], body["status"]) == ("orchestrator", "completed")
    assert body["routing"] == {
        "manager_model_alias": "deepseek",
        "selected_agent_keys": ["grace"],
        "fallback_used": False,
        "fallback_reason": None,
        "ignored_agent_keys": [],
    }
    assert [m["agent_key"] for m in answers(body)] == ["grace"]
    assert answers(body)[0]["content"].startswith("[Grace @grace]")

    routing = events_of(body, purpose="routing").get()
    assert (routing.model_alias, routing.agent_key) == ("deepseek", "")
    assert_metered(routing)
    assert events_of(body, purpose="agent").get().agent_key == "grace"
    assert body["usage"]["llm_calls"] == 2


def test_orchestrator_can_select_several_agents_in_seating_order(
    owner_client, room_session, post_turn
):
    session = room_session(RoomMode.ORCHESTRATOR)

    response = post_turn(owner_client, session, "Linus and Ada, your views?")

    assert response.status_code == 201
    assert response.json()["routing"]["selected_agent_keys"] == ["ada", "linus"]
    assert [m["agent_key"] for m in answers(response.json())] == ["ada", "linus"]


def test_orchestrator_with_nobody_named_answers_with_the_first_agent(
    owner_client, room_session, post_turn
):
    session = room_session(RoomMode.ORCHESTRATOR)

    response = post_turn(owner_client, session, "Hello there")

    assert response.status_code == 201
    body = response.json()
    # The demo manager itself picks the first agent: a valid answer, not a fallback.
    assert body["routing"] == {
        "manager_model_alias": "deepseek",
        "selected_agent_keys": ["ada"],
        "fallback_used": False,
        "fallback_reason": None,
        "ignored_agent_keys": [],
    }
    assert [m["agent_key"] for m in answers(body)] == ["ada"]
    assert events_of(body, purpose="routing").count() == 1


# --- direct -------------------------------------------------------------------------------------


def test_a_direct_session_answers_with_its_one_agent(owner_client, agents, post_turn):
    grace = agents[1]
    created = owner_client.post(f"/api/v1/agents/{grace.id}/sessions", {}, format="json")
    assert created.status_code == 201
    session_id = created.json()["id"]

    response = owner_client.post(
        f"/api/v1/sessions/{session_id}/turns", {"message": "Hi, who are you?"}, format="json"
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["mode"], body["status"], body["routing"]) == ("direct", "completed", None)
    (reply,) = answers(body)
    assert (reply["agent_key"], reply["status"]) == ("grace", "ok")
    assert reply["content"].startswith("[Grace @grace]")
    event = events_of(body).get()
    assert (event.purpose, event.agent_key, event.room_id) == ("agent", "grace", None)
    assert str(event.session_id) == session_id
    assert_metered(event)


# --- summary ------------------------------------------------------------------------------------


def test_a_summary_is_written_at_turn_8(owner_client, owner, agents, make_session, post_turn):
    session = make_session(owner, agent=agents[0])
    summary_url = f"/api/v1/sessions/{session.id}/summary"
    messages = [
        "We decided to ship the parser on Friday.",
        "Please write the release notes.",
        "What about the documentation?",
        "The benchmark shows a 20 percent speedup.",
        "We agreed to drop Python 3.9.",
        "Need to update the changelog too.",
        "Is the migration reversible?",
        "The team has four reviewers.",
    ]

    for index, message in enumerate(messages[:7], start=1):
        response = post_turn(owner_client, session, message)
        assert response.status_code == 201
        assert response.json()["turn_index"] == index
    assert owner_client.get(summary_url).status_code == 404
    assert not LlmCallEvent.objects.filter(session=session, purpose="summary").exists()

    eighth = post_turn(owner_client, session, messages[7])

    assert eighth.status_code == 201
    assert eighth.json()["turn_index"] == 8
    response = owner_client.get(summary_url)
    assert response.status_code == 200
    summary = response.json()
    assert summary["turn_id"] == eighth.json()["id"]
    assert summary["summary_text"]
    for key in ("key_facts", "decisions", "open_questions", "action_items"):
        assert isinstance(summary[key], list), key
        assert all(isinstance(item, str) for item in summary[key]), key
    assert "What about the documentation?" in summary["open_questions"]
    assert "Please write the release notes." in summary["action_items"]

    summary_event = LlmCallEvent.objects.get(session=session, purpose="summary")
    assert str(summary_event.turn_id) == eighth.json()["id"]
    assert summary_event.model_alias == settings.PANTHEON_SUMMARIZER_MODEL_ALIAS
    assert summary_event.agent_key == ""
    assert_metered(summary_event)
    # The summary call is part of the turn's usage: one agent call and the summary.
    assert eighth.json()["usage"]["llm_calls"] == 2
    assert Decimal(eighth.json()["usage"]["credits"]) == sum(
        e.credits for e in events_of(eighth.json())
    )


# --- provider failure ---------------------------------------------------------------------------


def test_a_provider_failure_fails_the_turn_but_never_the_request(
    owner_client, room_session, post_turn
):
    session = room_session(RoomMode.ROUNDTABLE)

    response = post_turn(owner_client, session, "Break please [[demo:fail]]")

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "failed"
    assert body["completed_at"] is not None
    replies = answers(body)
    assert [m["agent_key"] for m in replies] == ["ada", "grace", "linus"]
    for message in replies:
        assert (message["status"], message["error_code"], message["content"]) == (
            "error",
            "provider_error",
            "",
        )

    events = list(events_of(body))
    assert len(events) == 3
    for event in events:
        assert (event.status, event.error_type) == ("error", "provider_error")
        assert event.attempts == 1 + settings.PANTHEON_LLM_MAX_RETRIES
        assert (event.input_tokens_fresh, event.output_tokens, event.credits) == (0, 0, 0)
    assert body["usage"]["llm_calls"] == 3
    assert Decimal(body["usage"]["credits"]) == 0

    # The session is not blocked: the next turn runs.
    after = post_turn(owner_client, session, "And now?")
    assert after.status_code == 201
    assert after.json()["status"] == "completed"
    assert after.json()["turn_index"] == 2


def test_a_provider_timeout_is_not_retried(owner_client, agents, owner, make_session, post_turn):
    session = make_session(owner, agent=agents[0])

    response = post_turn(owner_client, session, "Slow [[demo:timeout]]")

    assert response.status_code == 201
    assert response.json()["status"] == "failed"
    (reply,) = answers(response.json())
    assert (reply["status"], reply["error_code"]) == ("error", "timeout")
    event = events_of(response.json()).get()
    assert (event.status, event.error_type, event.attempts) == ("timeout", "timeout", 1)
