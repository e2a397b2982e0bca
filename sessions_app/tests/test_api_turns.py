"""POST sessions/{id}/turns in every mode, with a scripted gateway; GET turns."""

import logging
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from rooms.models import RoomMode
from sessions_app.models import Message, SessionSummary, Turn, TurnContextAudit
from usage.models import LlmCallEvent, ModelAlias, ModelPrice, PricingVersion

pytestmark = pytest.mark.django_db

CONFLICT_BODY = {"detail": "Turn creation conflicted with concurrent writes. Please retry."}
TURN_KEYS = {
    "id",
    "session_id",
    "turn_index",
    "mode",
    "status",
    "user_input",
    "messages",
    "routing",
    "usage",
    "balance",
    "created_at",
    "completed_at",
}


@pytest.fixture
def trio(owner, make_agent):
    return [
        make_agent(owner, "ada", model_alias="deepseek"),
        make_agent(owner, "grace", model_alias="qwen"),
        make_agent(owner, "linus", model_alias="llama"),
    ]


@pytest.fixture
def room_session(owner, trio, make_room, make_session):
    def make(mode=RoomMode.MANUAL, agents=None):
        room = make_room(owner, trio if agents is None else agents, mode=mode, goal="Ship it")
        return make_session(owner, room=room)

    return make


def assert_nothing_written():
    assert Turn.objects.count() == 0
    assert Message.objects.count() == 0
    assert LlmCallEvent.objects.count() == 0


def answers(body):
    return [(m["agent_key"], m["status"]) for m in body["messages"] if m["role"] == "assistant"]


# --- manual mode ----------------------------------------------------------------------------


def test_manual_runs_every_tagged_agent_in_tag_order_once(
    owner_client, room_session, fake_gateway, post_turn
):
    session = room_session()
    response = post_turn(owner_client, session, "@linus then @ada, and @linus again: plan?")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == TURN_KEYS
    assert body["mode"] == "manual"
    assert body["status"] == "completed"
    assert body["turn_index"] == 1
    assert answers(body) == [("linus", "ok"), ("ada", "ok")]
    assert body["messages"][0]["role"] == "user"
    assert [m["sequence"] for m in body["messages"]] == [1, 2, 3]
    assert [m["model_alias"] for m in body["messages"][1:]] == ["llama", "deepseek"]
    assert body["routing"] is None
    assert body["usage"]["llm_calls"] == 2
    assert [call.agent_key for call in fake_gateway.calls] == ["linus", "ada"]


def test_manual_without_a_valid_tag_is_refused_before_any_call(
    owner_client, room_session, fake_gateway, post_turn
):
    session = room_session()
    response = post_turn(owner_client, session, "hello @nobody and mail ada@example.com")

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["code"] == "no_valid_tagged_agents"
    # It says who can be tagged here, in seat order.
    assert detail["valid_agent_keys"] == ["ada", "grace", "linus"]
    assert "Valid: @ada, @grace, @linus." in detail["message"]
    assert fake_gateway.calls == []
    assert_nothing_written()


def test_room_without_agents_is_refused(owner_client, room_session, fake_gateway, post_turn):
    session = room_session(mode=RoomMode.ROUNDTABLE, agents=[])
    response = post_turn(owner_client, session, "anyone?")

    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "no_room_agents"
    assert fake_gateway.calls == []
    assert_nothing_written()


# --- roundtable -------------------------------------------------------------------------------


def test_roundtable_runs_all_agents_by_position_and_later_ones_see_earlier_answers(
    owner_client, room_session, fake_gateway, post_turn
):
    session = room_session(mode=RoomMode.ROUNDTABLE)
    response = post_turn(owner_client, session, "What do we build first?")

    assert response.status_code == 201
    body = response.json()
    assert body["mode"] == "roundtable"
    assert answers(body) == [("ada", "ok"), ("grace", "ok"), ("linus", "ok")]
    first_answer = body["messages"][1]["content"]
    second_answer = body["messages"][2]["content"]
    linus_prompt = "\n".join(m.content for m in fake_gateway.calls[2].messages)
    assert first_answer in linus_prompt and second_answer in linus_prompt
    ada_prompt = "\n".join(m.content for m in fake_gateway.calls[0].messages)
    assert "Ship it" in ada_prompt  # the room goal
    assert "@grace" in ada_prompt  # roster awareness


def test_roundtable_failing_agent_becomes_an_error_message_and_the_rest_go_on(
    owner_client, room_session, fake_gateway, post_turn
):
    fake_gateway.fail["grace"] = "timeout"
    session = room_session(mode=RoomMode.ROUNDTABLE)
    response = post_turn(owner_client, session, "Go")

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "partial"
    assert answers(body) == [("ada", "ok"), ("grace", "error"), ("linus", "ok")]
    assert body["messages"][2]["error_code"] == "timeout"
    failed = LlmCallEvent.objects.get(agent_key="grace")
    assert (failed.status, failed.error_type, failed.output_tokens) == ("timeout", "timeout", 0)
    assert body["usage"]["llm_calls"] == 3


def test_all_agents_failing_fails_the_turn_without_a_500(
    owner_client, room_session, fake_gateway, post_turn
):
    fake_gateway.fail_purposes["agent"] = "rate_limited"
    session = room_session(mode=RoomMode.ROUNDTABLE)
    response = post_turn(owner_client, session, "Go")

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "failed"
    assert {m["error_code"] for m in body["messages"][1:]} == {"rate_limited"}
    assert set(LlmCallEvent.objects.values_list("status", flat=True)) == {"rate_limited"}
    # The session is not blocked: the next turn runs.
    fake_gateway.fail_purposes.clear()
    assert post_turn(owner_client, session, "Again").json()["status"] == "completed"


def test_a_tag_after_chinese_text_calls_the_agent(
    owner_client, room_session, fake_gateway, post_turn
):
    """It was refused: 422 no_valid_tagged_agents, "Valid: @ada, @grace, @linus."."""
    response = post_turn(owner_client, room_session(), "请@ada回答这个问题")

    assert response.status_code == 201, response.json()
    assert answers(response.json()) == [("ada", "ok")]


def test_a_tag_in_code_calls_no_agent(owner_client, room_session, fake_gateway, post_turn):
    """It called Ada, though the user only quoted her key in code."""
    response = post_turn(owner_client, room_session(), "What does `@ada` do in\n```\n@ada\n```")

    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "no_valid_tagged_agents"
    assert response.json()["detail"]["message"].endswith(
        "A tag in code (between backticks) does not count."
    )
    assert fake_gateway.calls == []
    assert_nothing_written()


def test_a_refusal_without_a_tag_in_code_says_nothing_of_code(
    owner_client, room_session, post_turn
):
    response = post_turn(owner_client, room_session(), "Anyone there?")

    assert response.status_code == 422
    assert "code" not in response.json()["detail"]["message"]


# --- orchestrator -----------------------------------------------------------------------------


def test_orchestrator_runs_the_managers_selection_in_order_and_meters_routing(
    owner_client, room_session, fake_gateway, post_turn
):
    fake_gateway.routing_reply = '{"selected_agent_keys": ["linus", "ada"]}'
    session = room_session(mode=RoomMode.ORCHESTRATOR)
    response = post_turn(owner_client, session, "Who can code this?")

    body = response.json()
    assert response.status_code == 201
    assert body["routing"] == {
        "manager_model_alias": "deepseek",
        "selected_agent_keys": ["linus", "ada"],
        "fallback_used": False,
        "fallback_reason": None,
        "ignored_agent_keys": [],
    }
    assert answers(body) == [("linus", "ok"), ("ada", "ok")]
    routing_event = LlmCallEvent.objects.get(purpose="routing")
    assert routing_event.model_alias == "deepseek"
    assert routing_event.turn_id == Turn.objects.get().id
    assert body["usage"]["llm_calls"] == 3
    roster_prompt = fake_gateway.calls_for("routing")[0].messages[0].content
    assert all(key in roster_prompt for key in ("ada", "grace", "linus"))


def test_orchestrator_accepts_the_single_key_form(
    owner_client, room_session, fake_gateway, post_turn
):
    fake_gateway.routing_reply = '{"selected_agent_key": "grace"}'
    session = room_session(mode=RoomMode.ORCHESTRATOR)
    body = post_turn(owner_client, session, "Review please").json()

    assert body["routing"]["selected_agent_keys"] == ["grace"]
    assert body["routing"]["fallback_used"] is False
    assert answers(body) == [("grace", "ok")]


@pytest.mark.parametrize(
    ("raw", "reason", "ignored"),
    [
        ("I think Grace should answer", "no_json", []),
        ('{"selected_agent_keys": ["nobody"]}', "unknown_agents", ["nobody"]),
        ('{"x": 1}', "no_selection", []),
        ("[]", "no_json", []),
        ('{"selected_agent_keys": []}', "empty_selection", []),
    ],
)
def test_orchestrator_garbage_falls_back_to_the_first_agent_with_a_warning(
    owner_client, room_session, fake_gateway, post_turn, caplog, raw, reason, ignored
):
    fake_gateway.routing_reply = raw
    session = room_session(mode=RoomMode.ORCHESTRATOR)
    with caplog.at_level(logging.WARNING):
        body = post_turn(owner_client, session, "Anyone").json()

    assert body["routing"]["fallback_used"] is True
    assert body["routing"]["selected_agent_keys"] == ["ada"]
    # Why, in the answer (it said only that it fell back: the reason was in the logs).
    assert (body["routing"]["fallback_reason"], body["routing"]["ignored_agent_keys"]) == (
        reason,
        ignored,
    )
    assert answers(body) == [("ada", "ok")]
    # The warning says it fell back and the answer's length, not its text (it quotes the
    # user's conversation: DEBUG has it).
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert any(
        "falling back to ada" in said and f"(an answer of {len(raw)} characters)" in said
        for said in warnings
    ), warnings
    assert not any(raw in said for said in warnings)


def test_orchestrator_routing_call_failure_falls_back_and_is_metered(
    owner_client, room_session, fake_gateway, post_turn
):
    fake_gateway.fail_purposes["routing"] = "provider_error"
    session = room_session(mode=RoomMode.ORCHESTRATOR)
    body = post_turn(owner_client, session, "Anyone").json()

    assert body["status"] == "completed"
    assert body["routing"]["fallback_used"] is True
    assert body["routing"]["fallback_reason"] == "manager_failed"
    assert LlmCallEvent.objects.get(purpose="routing").status == "error"


def test_keys_the_manager_named_that_no_seat_has_are_said(
    owner_client, room_session, fake_gateway, post_turn
):
    """`["zed", "grace"]` routed to Grace and said nothing of zed."""
    fake_gateway.routing_reply = '{"selected_agent_keys": ["zed", "grace"]}'
    body = post_turn(owner_client, room_session(mode=RoomMode.ORCHESTRATOR), "Anyone").json()

    assert body["routing"]["selected_agent_keys"] == ["grace"]
    assert (body["routing"]["fallback_used"], body["routing"]["ignored_agent_keys"]) == (
        False,
        ["zed"],
    )


# --- mode and roster changes, direct sessions, overrides -----------------------------------------


def test_pending_mode_applies_at_the_next_turn(owner_client, room_session, fake_gateway, post_turn):
    session = room_session(mode=RoomMode.MANUAL)
    room = session.room
    assert (
        owner_client.put(f"/api/v1/rooms/{room.id}/mode", {"mode": "roundtable"}).status_code == 200
    )
    room.refresh_from_db()
    assert (room.current_mode, room.pending_mode) == ("manual", "roundtable")

    body = post_turn(owner_client, session, "no tags needed now").json()

    assert body["mode"] == "roundtable"
    assert len(answers(body)) == 3
    room.refresh_from_db()
    assert (room.current_mode, room.pending_mode) == ("roundtable", None)


def test_roster_changes_apply_at_the_next_turn_and_old_turns_keep_their_snapshot(
    owner_client, room_session, trio, fake_gateway, post_turn
):
    session = room_session(mode=RoomMode.ROUNDTABLE)
    first = post_turn(owner_client, session, "one").json()
    ada, grace, _ = trio
    owner_client.put(
        f"/api/v1/rooms/{session.room_id}/agents",
        {"agent_ids": [str(grace.id), str(ada.id)]},
        format="json",
    )
    second = post_turn(owner_client, session, "two").json()

    assert answers(second) == [("grace", "ok"), ("ada", "ok")]
    first_turn = Turn.objects.get(pk=first["id"])
    assert [entry["agent_key"] for entry in first_turn.roster] == ["ada", "grace", "linus"]
    assert [entry["agent_key"] for entry in Turn.objects.get(pk=second["id"]).roster] == [
        "grace",
        "ada",
    ]


def test_direct_session_answers_with_its_one_agent(
    owner, owner_client, trio, make_session, fake_gateway, post_turn
):
    session = make_session(owner, agent=trio[1])
    body = post_turn(owner_client, session, "no tag here").json()

    assert body["mode"] == "direct"
    assert answers(body) == [("grace", "ok")]


def test_model_alias_override_replaces_every_agents_alias(
    owner_client, room_session, fake_gateway, post_turn
):
    session = room_session(mode=RoomMode.ROUNDTABLE)
    body = post_turn(owner_client, session, "Go", model_alias_override="premium").json()

    assert {m["model_alias"] for m in body["messages"][1:]} == {"premium"}
    assert {call.alias.alias for call in fake_gateway.calls} == {"premium"}
    assert set(LlmCallEvent.objects.values_list("model_alias", flat=True)) == {"premium"}


@pytest.mark.parametrize("override", [None, ""])
def test_an_override_of_null_is_the_field_left_out(
    owner_client, room_session, fake_gateway, post_turn, override
):
    """`"model_alias_override": null` was a 400 "This field may not be null." where `""` and
    leaving it out ran the turn on each agent's own alias."""
    session = room_session(mode=RoomMode.ROUNDTABLE)
    response = post_turn(owner_client, session, "Go", model_alias_override=override)

    assert response.status_code == 201, response.json()
    assert [m["model_alias"] for m in response.json()["messages"][1:]] == [
        "deepseek",
        "qwen",
        "llama",
    ]
    assert Turn.objects.get().model_alias_override == ""


def test_an_override_typed_in_another_case_is_the_alias(
    owner_client, room_session, fake_gateway, post_turn
):
    """`"model_alias_override": "PREMIUM"` was 422 `unknown_model_alias` while premium
    exists (aliases differ by more than case): it is premium, as stored and billed."""
    session = room_session(mode=RoomMode.ROUNDTABLE)
    response = post_turn(owner_client, session, "Go", model_alias_override="PREMIUM")

    assert response.status_code == 201, response.json()
    assert {m["model_alias"] for m in response.json()["messages"][1:]} == {"premium"}
    assert Turn.objects.get().model_alias_override == "premium"
    assert set(LlmCallEvent.objects.values_list("model_alias", flat=True)) == {"premium"}


@pytest.mark.parametrize(
    ("override", "code"),
    [("no_such_alias", "unknown_model_alias"), ("premium", "model_alias_disabled")],
)
def test_unusable_override_is_refused_before_any_call(
    owner_client, room_session, fake_gateway, post_turn, override, code
):
    ModelAlias.objects.filter(alias="premium").update(enabled=False)
    session = room_session(mode=RoomMode.ROUNDTABLE)
    response = post_turn(owner_client, session, "Go", model_alias_override=override)

    assert response.status_code == 422
    assert response.json()["detail"]["code"] == code
    assert fake_gateway.calls == []
    assert_nothing_written()


def test_agent_on_a_disabled_alias_is_refused(owner_client, room_session, fake_gateway, post_turn):
    ModelAlias.objects.filter(alias="qwen").update(enabled=False)
    session = room_session()
    response = post_turn(owner_client, session, "@grace hi")

    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "model_alias_disabled"
    assert_nothing_written()


def test_a_disabled_alias_refusing_a_roundtable_names_the_seat_on_it(
    owner_client, room_session, fake_gateway, post_turn
):
    """One seat's alias refuses the whole turn: it said "Model alias 'qwen' is disabled.", and
    the user could not tell which of the room's agents to change."""
    ModelAlias.objects.filter(alias="qwen").update(enabled=False)
    response = post_turn(owner_client, room_session(mode=RoomMode.ROUNDTABLE), "Go")

    assert response.status_code == 422
    assert response.json()["detail"] == {
        "code": "model_alias_disabled",
        "message": "Model alias 'qwen' is disabled (the alias of Grace (@grace)).",
    }
    override = post_turn(
        owner_client, room_session(mode=RoomMode.ROUNDTABLE), "Go", model_alias_override="qwen"
    )
    assert override.json()["detail"]["message"] == (
        "Model alias 'qwen' is disabled (the request's model_alias_override)."
    )
    assert fake_gateway.calls == []


def test_the_keys_a_refusal_offers_leave_out_agents_on_a_disabled_alias(
    owner_client, room_session, fake_gateway, post_turn
):
    """Grace was offered ("Valid: @ada, @grace, @linus."), and a tag of her is refused."""
    ModelAlias.objects.filter(alias="qwen").update(enabled=False)
    session = room_session()
    response = post_turn(owner_client, session, "hello, anyone?")

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["valid_agent_keys"] == ["ada", "linus"]
    assert "Valid: @ada, @linus." in detail["message"]
    assert post_turn(owner_client, session, "@ada hello").status_code == 201


@pytest.mark.parametrize(
    ("override", "code"),
    [(None, "model_alias_disabled"), ("no_such_alias", "unknown_model_alias")],
    ids=["every seat disabled", "an unknown override"],
)
def test_a_manual_turn_no_tag_could_reach_names_the_alias_not_an_empty_list(
    owner_client, room_session, fake_gateway, post_turn, override, code
):
    """It offered `valid_agent_keys: []`, saying the room needs an agent seated in it."""
    ModelAlias.objects.update(enabled=False)
    session = room_session()
    extra = {} if override is None else {"model_alias_override": override}
    response = post_turn(owner_client, session, "hello", **extra)

    assert response.status_code == 422
    assert response.json()["detail"]["code"] == code
    assert "valid_agent_keys" not in response.json()["detail"]
    assert fake_gateway.calls == []


def test_a_disabled_manager_is_named_as_the_manager(
    owner_client, room_session, fake_gateway, post_turn, settings
):
    """It read "Model alias 'premium' is disabled.", as if the user had picked it."""
    settings.PANTHEON_MANAGER_MODEL_ALIAS = "premium"
    ModelAlias.objects.filter(alias="premium").update(enabled=False)
    session = room_session(mode=RoomMode.ORCHESTRATOR)
    response = post_turn(owner_client, session, "Who knows?")

    assert response.status_code == 422
    assert response.json()["detail"] == {
        "code": "model_alias_disabled",
        "message": "The manager's model alias 'premium' is disabled: orchestrator rooms cannot "
        "route turns until an operator fixes it; switch the room to another mode meanwhile.",
    }
    assert fake_gateway.calls == []
    assert_nothing_written()


# --- bad input and refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"message": ""},
        {"message": "   "},
        {"message": 42},
        {"message": ["@ada"]},
        {"message": None},
        {"message": "@ada " + "x" * 20_000},
    ],
)
def test_bad_message_is_400_and_writes_nothing(owner_client, room_session, fake_gateway, payload):
    session = room_session()
    response = owner_client.post(f"/api/v1/sessions/{session.id}/turns", payload, format="json")

    assert response.status_code == 400
    assert "message" in response.json()
    assert fake_gateway.calls == []
    assert_nothing_written()


def test_input_larger_than_the_context_budget_is_refused(
    owner_client, room_session, fake_gateway, post_turn
):
    # 2048-token window, answers of up to 409: input budget = 2048 - 409 - 1024 (overhead) = 615.
    ModelAlias.objects.filter(alias="deepseek").update(context_window=2048, max_output_tokens=409)
    session = room_session()
    response = post_turn(owner_client, session, "@ada " + "word " * 600)

    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "context_budget_exceeded"
    assert fake_gateway.calls == []
    assert_nothing_written()


def test_another_users_session_is_404(
    outsider_client, room_session, fake_gateway, post_turn, caplog
):
    session = room_session()
    with caplog.at_level(logging.INFO):
        response = post_turn(outsider_client, session, "@ada hi")

    assert response.status_code == 404
    # An ordinary refusal: logged once, by the access line, as a warning, never as an error.
    assert [r.levelname for r in caplog.records if r.levelno >= logging.WARNING] == ["WARNING"]
    assert outsider_client.get(f"/api/v1/sessions/{session.id}/turns").status_code == 404
    assert_nothing_written()


def test_anonymous_is_refused(anon_client, room_session, post_turn):
    session = room_session()
    assert post_turn(anon_client, session, "@ada hi").status_code == 401


def test_deleted_session_is_404(owner_client, room_session, fake_gateway, post_turn):
    session = room_session()
    owner_client.delete(f"/api/v1/sessions/{session.id}")
    assert post_turn(owner_client, session, "@ada hi").status_code == 404


# --- the claim ------------------------------------------------------------------------------------


def test_a_running_turn_blocks_the_session_with_the_exact_409_naming_it(
    owner_client, room_session, fake_gateway, post_turn
):
    """The design's `detail`, and beside it a code and the running turn's id, so that a client
    can follow the turn (`GET turns/{id}/events`) or cancel it: before, the body said nothing
    a UI could act on, for as long as the turn ran."""
    session = room_session()
    running = Turn.objects.create(
        session=session, turn_index=1, mode="manual", user_input="in flight"
    )
    response = post_turn(owner_client, session, "@ada hi")

    assert response.status_code == 409
    assert response.json() == {
        **CONFLICT_BODY,
        "code": "turn_in_progress",
        "turn_id": str(running.pk),
    }
    assert "Retry-After" not in response.headers
    assert fake_gateway.calls == []
    assert Turn.objects.count() == 1


@pytest.mark.parametrize("still_running", [True, False])
def test_a_claim_that_loses_the_race_names_the_running_turn_if_one_runs(
    owner, room_session, fake_gateway, still_running
):
    """The session was read before another request claimed turn 1, so the claim collides with
    it at the unique constraints: the 409 names that turn while it runs (one read, on this path
    only); once it has ended, a retry would go through (`turn_conflict`, no id)."""
    from pantheon.exceptions import TurnConflict
    from sessions_app.selectors import session_for_turn
    from sessions_app.turns import TurnRunner, turn_prepare

    session = room_session()
    read_before = session_for_turn(user=owner, session_id=session.pk)
    other = Turn.objects.create(
        session=session,
        turn_index=1,
        mode="manual",
        user_input="first",
        status="running" if still_running else "completed",
    )
    runner = TurnRunner(
        turn_prepare(session=read_before, user=owner, user_input="@ada hi"), fake_gateway
    )

    with pytest.raises(TurnConflict) as conflict:
        runner.claim()

    expected = {**CONFLICT_BODY, "code": "turn_conflict"}
    if still_running:
        expected = {**CONFLICT_BODY, "code": "turn_in_progress", "turn_id": str(other.pk)}
    assert conflict.value.as_body() == expected
    assert Turn.objects.count() == 1


def test_a_stale_running_turn_is_interrupted_and_no_longer_blocks(
    owner_client, room_session, fake_gateway, post_turn, settings
):
    session = room_session()
    long_ago = timezone.now() - timedelta(seconds=settings.PANTHEON_TURN_STALE_SECONDS + 5)
    stale = Turn.objects.create(
        session=session,
        turn_index=1,
        mode="manual",
        user_input="abandoned",
        created_at=long_ago,
        progress_at=long_ago,
    )
    response = post_turn(owner_client, session, "@ada hi")

    assert response.status_code == 201
    assert response.json()["turn_index"] == 2
    stale.refresh_from_db()
    assert stale.status == "interrupted"
    assert stale.completed_at is not None


# --- reads, summary, audit ----------------------------------------------------------------------


def test_get_turns_and_turn_detail_return_the_post_shape(
    owner_client, outsider_client, room_session, fake_gateway, post_turn
):
    session = room_session(mode=RoomMode.ROUNDTABLE)
    posted = post_turn(owner_client, session, "one").json()
    post_turn(owner_client, session, "two")
    # The balance belongs to the answer that ran the turn; a turn read later has none.
    assert posted.pop("balance")["month_credits_used"] == posted["usage"]["credits"]
    posted["balance"] = None

    detail = owner_client.get(f"/api/v1/turns/{posted['id']}")
    assert detail.status_code == 200
    assert detail.json() == posted
    listing = owner_client.get(f"/api/v1/sessions/{session.id}/turns").json()
    assert [turn["turn_index"] for turn in listing["results"]] == [1, 2]
    assert listing["results"][0] == posted
    assert outsider_client.get(f"/api/v1/turns/{posted['id']}").status_code == 404


def test_every_eighth_turn_writes_a_structured_summary(
    owner_client, room_session, fake_gateway, post_turn
):
    session = room_session()
    summary_url = f"/api/v1/sessions/{session.id}/summary"
    for index in range(1, 8):
        post_turn(owner_client, session, f"@ada message {index}")
    none_yet = owner_client.get(summary_url)
    assert none_yet.status_code == 404
    assert none_yet.json()["detail"]["code"] == "no_summary_yet"  # not an unknown session's
    unknown = owner_client.get(f"/api/v1/sessions/{uuid.uuid4()}/summary")
    assert unknown.status_code == 404 and isinstance(unknown.json()["detail"], str)
    assert fake_gateway.calls_for("summary") == []

    post_turn(owner_client, session, "@ada message 8")

    response = owner_client.get(summary_url)
    assert response.status_code == 200
    body = response.json()
    assert body["summary_text"] == "They talked."
    assert body["key_facts"] == ["a fact"]
    assert body["decisions"] == ["a decision"]
    assert body["open_questions"] == ["a question?"]
    assert body["action_items"] == ["an action"]
    # Everything before the eighth turn; its own exchange stays raw for the next turn.
    assert (body["from_sequence"], body["to_sequence"]) == (1, 14)
    assert LlmCallEvent.objects.filter(purpose="summary").count() == 1
    audit = TurnContextAudit.objects.get(turn__turn_index=8)
    assert audit.summary_triggered is True

    # The next turn's agents see the summary in their prompt.
    post_turn(owner_client, session, "@ada message 9")
    assert "They talked." in fake_gateway.calls[-1].messages[0].content


def test_invalid_summary_json_keeps_the_text_with_empty_lists(
    owner_client, room_session, fake_gateway, post_turn
):
    fake_gateway.summary_reply = "Plain prose, not JSON."
    session = room_session()
    for index in range(8):
        post_turn(owner_client, session, f"@ada message {index}")

    summary = SessionSummary.objects.get()
    assert summary.summary_text == "Plain prose, not JSON."
    assert (summary.key_facts, summary.decisions) == ([], [])
    assert summary.valid_json is False


def test_summary_is_due_when_the_context_passes_70_percent(
    owner_client, room_session, fake_gateway, post_turn, settings
):
    settings.PANTHEON_SUMMARIZER_MODEL_ALIAS = "premium"  # a large window: room for everything
    # Input budget 615 tokens (see above); one long earlier exchange pushes the next turn past 70 %.
    ModelAlias.objects.filter(alias="deepseek").update(context_window=2048, max_output_tokens=409)
    session = room_session()
    post_turn(owner_client, session, "@ada " + "word " * 150)
    assert fake_gateway.calls_for("summary") == []
    post_turn(owner_client, session, "@ada " + "more " * 100)

    assert len(fake_gateway.calls_for("summary")) == 1
    audit = TurnContextAudit.objects.get(turn__turn_index=2)
    assert audit.summary_triggered is True
    assert audit.estimated_tokens_before >= 0.7 * audit.input_budget
    assert audit.input_budget == 615
    summary = SessionSummary.objects.get()
    assert (summary.from_sequence, summary.to_sequence) == (1, 2)  # turn 1 only

    # The summary replaces the history it covers: the pressure drops, no summary again.
    post_turn(owner_client, session, "@ada short follow-up")
    assert len(fake_gateway.calls_for("summary")) == 1
    audit = TurnContextAudit.objects.get(turn__turn_index=3)
    assert audit.summary_used is True
    assert audit.estimated_tokens_before < 0.7 * audit.input_budget
    prompt = "\n".join(m.content for m in fake_gateway.calls_for("agent")[-1].messages)
    assert "They talked." in prompt  # the summary
    assert "word word" not in prompt  # not the raw first turn it covers
    assert "more more" in prompt  # the latest exchange, verbatim


def test_context_over_90_percent_is_pruned_oldest_first(
    owner_client, room_session, fake_gateway, post_turn
):
    ModelAlias.objects.filter(alias="deepseek").update(context_window=2048, max_output_tokens=409)
    fake_gateway.fail_purposes["summary"] = "provider_error"  # no summary to relieve the pressure
    session = room_session()
    post_turn(owner_client, session, "@ada FIRST " + "word " * 150)
    post_turn(owner_client, session, "@ada SECOND " + "word " * 150)
    post_turn(owner_client, session, "@ada third, short")

    prompt = fake_gateway.calls_for("agent")[-1].messages
    text = "\n".join(message.content for message in prompt)
    assert "FIRST" not in text
    assert "SECOND" in text
    audit = TurnContextAudit.objects.get(turn__turn_index=3)
    assert audit.pruned is True
    assert audit.history_messages_pruned >= 1
    assert audit.estimated_tokens_after <= 0.9 * audit.input_budget


def test_turn_totals_equal_the_sum_of_their_events(
    owner, owner_client, trio, room_session, make_session, fake_gateway, post_turn
):
    # Prices for two aliases in a pricing version with a multiplier; litellm-style fractional
    # cost for the others; cached tokens; failures; every mode and a direct session.
    version = PricingVersion.objects.create(
        name="v2",
        default_multiplier=Decimal("1.75"),
        effective_from=timezone.now() - timedelta(days=1),
    )
    for alias, prices in {
        "deepseek": ("0.27", "0.07", "1.10"),
        "qwen": ("0.9", None, "0.9"),
    }.items():
        ModelPrice.objects.create(
            pricing_version=version,
            model_alias=ModelAlias.objects.get(alias=alias),
            input_usd_per_mtok=Decimal(prices[0]),
            cached_input_usd_per_mtok=None if prices[1] is None else Decimal(prices[1]),
            output_usd_per_mtok=Decimal(prices[2]),
        )
    fake_gateway.usage = (1234, 321, 77)
    fake_gateway.cost = Decimal("0.000123456789012345")
    fake_gateway.routing_reply = '{"selected_agent_keys": ["ada", "grace"]}'
    runs = [
        (room_session(mode=RoomMode.ROUNDTABLE), "all of you"),
        (room_session(mode=RoomMode.ORCHESTRATOR), "route me"),
        (room_session(mode=RoomMode.MANUAL), "@grace @linus"),
        (make_session(owner, agent=trio[2]), "direct to the failing one"),
    ]
    for session, message in runs:
        for index in range(8):  # the eighth turn of each session summarizes
            if index == 3:
                fake_gateway.fail_purposes["routing"] = "timeout"
            if index % 2:
                fake_gateway.fail["linus"] = "provider_error"
            assert post_turn(owner_client, session, message).status_code == 201
            fake_gateway.fail_purposes.clear()
            fake_gateway.fail.clear()

    assert LlmCallEvent.objects.count() == len(fake_gateway.calls)
    # Not the direct session's: its eighth turn failed (Linus fails every other turn).
    assert LlmCallEvent.objects.filter(purpose="summary").count() == 3
    assert LlmCallEvent.objects.filter(purpose="routing", status="timeout").count() == 1
    priced = LlmCallEvent.objects.filter(model_alias="deepseek", status="success").first()
    assert priced.pricing_version_id == version.id
    # 1234 fresh × 0.27 + 321 cached × 0.07 + 77 × 1.10, per million tokens
    assert priced.provider_cost_usd == Decimal("0.0004403500")
    assert priced.credits == Decimal("0.0946750000")  # (1234×0.35 + 321×0.1 + 77) / 1e4 × 1.75
    assert LlmCallEvent.objects.filter(model_alias="llama", status="error").exists()
    estimated = LlmCallEvent.objects.filter(model_alias="llama", status="success")
    assert {event.provider_cost_usd for event in estimated} == {Decimal("0.0001234568")}
    for turn in Turn.objects.all():
        events = LlmCallEvent.objects.filter(turn=turn)
        sums = events.aggregate(
            fresh=Sum("input_tokens_fresh"),
            cached=Sum("input_tokens_cached"),
            output=Sum("output_tokens"),
            credits=Sum("credits"),
            cost=Sum("provider_cost_usd"),
        )
        assert turn.llm_calls == events.count()
        assert turn.input_tokens == sums["fresh"] + sums["cached"]
        assert turn.output_tokens == sums["output"]
        assert turn.credits == sums["credits"]
        assert turn.provider_cost_usd == sums["cost"]
    total = LlmCallEvent.objects.aggregate(total=Sum("credits"))["total"]
    assert total == sum((turn.credits for turn in Turn.objects.all()), Decimal("0"))


def test_a_turns_cost_is_the_sum_of_its_rows_as_the_ledger_keeps_them(
    owner, owner_client, make_agent, make_room, make_session, fake_gateway, post_turn
):
    """litellm's cost estimates come with more decimals than the ledger keeps (10): each row
    keeps its own rounded, and the turn's cost is the sum of those rows, not the rounding of
    their exact sum (0.0002469135 here, a place more than its two rows)."""
    PricingVersion.objects.create(  # in force, and prices nothing: the estimates count
        name="unpriced", default_multiplier=Decimal("1"), effective_from=timezone.now()
    )
    agents = [make_agent(owner, key, model_alias="llama") for key in ("ada", "grace")]
    session = make_session(owner, room=make_room(owner, agents, mode=RoomMode.ROUNDTABLE))
    fake_gateway.cost = Decimal("0.000123456745")  # 0.0001234567 and 0.45 of its last place

    response = post_turn(owner_client, session, "both of you")

    assert response.status_code == 201, response.content
    rows = LlmCallEvent.objects.filter(turn_id=response.json()["id"])
    assert [row.provider_cost_usd for row in rows] == [Decimal("0.0001234567")] * 2
    assert response.json()["usage"]["provider_cost_usd"] == "0.0002469134"
    assert Turn.objects.get().provider_cost_usd == Decimal("0.0002469134")


def test_live_backend_counts_tokens_with_the_models_tokenizer(
    owner_client, room_session, fake_gateway, post_turn, settings
):
    # 500 repeated words: ~780 tokens by the character estimate, 500 by gpt-4o's tokenizer;
    # with the agent's system prompt (~100 by either count) against an input budget of 615.
    ModelAlias.objects.filter(alias="deepseek").update(
        litellm_model="gpt-4o", context_window=2048, max_output_tokens=409
    )
    message = "@ada" + " word" * 500
    session = room_session()
    assert post_turn(owner_client, session, message).status_code == 422  # demo: estimate

    settings.PANTHEON_LLM_BACKEND = "live"
    response = post_turn(owner_client, session, message)
    assert response.status_code == 201
    assert response.json()["status"] == "completed"


def test_a_stale_takeover_stops_the_old_worker_which_keeps_only_its_ledger_row(
    owner, owner_client, trio, make_session, fake_gateway, post_turn, settings, caplog
):
    """Turn 1's provider hangs past the stale limit; turn 2 takes the session over, marking
    turn 1's call in flight lost. When that call returns, turn 1 writes nothing into the
    timeline and answers 409; its ledger row stays lost, with the usage the provider reported
    (before, it kept the input estimate and no output), and a warning says what happened."""
    session = make_session(owner, agent=trio[0])
    second = {}

    def take_over(call):
        fake_gateway.during_call = None
        long_ago = timezone.now() - timedelta(seconds=settings.PANTHEON_TURN_STALE_SECONDS + 1)
        Turn.objects.filter(turn_index=1).update(progress_at=long_ago)
        second["response"] = post_turn(owner_client, session, "are you there?")

    fake_gateway.during_call = take_over
    first = post_turn(owner_client, session, "a slow question")

    assert first.status_code == 409
    assert first.json() == {**CONFLICT_BODY, "code": "turn_conflict"}
    assert second["response"].status_code == 201
    assert second["response"].json()["turn_index"] == 2
    stale = Turn.objects.get(turn_index=1)
    assert stale.status == "interrupted"
    assert list(stale.messages.values_list("role", flat=True)) == ["user"]
    lost = LlmCallEvent.objects.get(turn=stale)
    assert lost.status == "lost"
    usage = (lost.input_tokens_fresh, lost.input_tokens_cached, lost.output_tokens)
    assert (usage, lost.attempts, lost.credits) == (fake_gateway.usage, 1, 0)
    stale.refresh_from_db()
    assert (stale.input_tokens, stale.output_tokens, stale.credits) == (120, 10, 0)
    taken = [r for r in caplog.records if "taken over" in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in taken] == [
        (
            "WARNING",
            f"turn {stale.pk} was taken over (turn_conflict) while its agent call for "
            f"{trio[0].agent_key} ran: its answer is not stored, and the call stays lost with "
            "the usage its provider reported",
        )
    ]
    timeline = owner_client.get(f"/api/v1/sessions/{session.id}/messages").json()["results"]
    assert [(m["sequence"], m["role"]) for m in timeline] == [
        (1, "user"),
        (2, "user"),
        (3, "assistant"),
    ]


def test_an_unexpected_error_fails_the_turn_and_keeps_every_call_in_the_ledger(
    owner_client, room_session, fake_gateway, post_turn, monkeypatch
):
    def broken(runner):
        raise RuntimeError("bug in the summary ladder")

    monkeypatch.setattr("sessions_app.turns.TurnRunner._summary_due", broken)
    owner_client.raise_request_exception = False
    session = room_session(mode=RoomMode.ROUNDTABLE)

    response = post_turn(owner_client, session, "go")

    assert response.status_code == 500
    turn = Turn.objects.get()
    assert turn.status == "failed"
    assert turn.completed_at is not None
    # ada and grace committed their steps; linus was called, then the bug struck before his
    # step committed: his call is still on the ledger (lost: in doubt), and on the totals.
    assert len(fake_gateway.calls) == 3
    stored = LlmCallEvent.objects.filter(turn=turn)
    assert sorted(stored.values_list("agent_key", flat=True)) == ["ada", "grace", "linus"]
    assert stored.get(agent_key="linus").status == "lost"
    assert turn.llm_calls == 3
    assert turn.credits == stored.aggregate(total=Sum("credits"))["total"]
    assert list(turn.messages.values_list("agent_key", flat=True)) == ["", "ada", "grace"]
    # The session is not blocked.
    monkeypatch.setattr("sessions_app.turns.TurnRunner._summary_due", lambda runner: False)
    assert post_turn(owner_client, session, "again").status_code == 201
    assert len(fake_gateway.calls) == 6


def test_orchestrator_routes_only_among_agents_whose_alias_is_usable(
    owner_client, room_session, fake_gateway, post_turn
):
    ModelAlias.objects.filter(alias="qwen").update(enabled=False)  # grace's alias
    fake_gateway.routing_reply = '{"selected_agent_keys": ["grace"]}'
    session = room_session(mode=RoomMode.ORCHESTRATOR)

    body = post_turn(owner_client, session, "Grace?").json()

    roster_prompt = fake_gateway.calls_for("routing")[0].messages[0].content
    assert "@grace" not in roster_prompt and "grace" not in roster_prompt.split("Roster")[-1]
    assert body["routing"]["fallback_used"] is True
    assert answers(body) == [("ada", "ok")]


@pytest.fixture
def smol_and_bigg(owner, make_agent):
    """Smol on a 4,096-token window (a prompt of 2,560 tokens), Bigg on deepseek's 64,000."""
    ModelAlias.objects.filter(alias="qwen").update(context_window=4096, max_output_tokens=512)
    return [
        make_agent(owner, "smol", model_alias="qwen"),
        make_agent(owner, "bigg", model_alias="deepseek"),
    ]


# 9,000 characters: about 2,813 tokens, past Smol's budget, well within Bigg's.
LONG_FOR_SMOL = "@bigg " + "y" * 9000


def test_orchestrator_routes_only_among_agents_whose_window_fits_the_message(
    owner_client, room_session, fake_gateway, post_turn, smol_and_bigg
):
    """It was refused up front (422 context_budget_exceeded, naming Smol's instructions), with
    no routing call, though the manual mode let Bigg answer the same message."""
    fake_gateway.routing_reply = "no idea"  # falls back to the first agent it routes among
    session = room_session(mode=RoomMode.ORCHESTRATOR, agents=smol_and_bigg)

    response = post_turn(owner_client, session, LONG_FOR_SMOL)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["routing"]["fallback_used"] is True
    assert body["routing"]["selected_agent_keys"] == ["bigg"]
    assert answers(body) == [("bigg", "ok")]
    roster_prompt = fake_gateway.calls_for("routing")[0].messages[0].content
    assert "smol" not in roster_prompt.split("Roster")[-1]


def test_orchestrator_refuses_a_message_no_seat_can_fit(
    owner_client, room_session, fake_gateway, post_turn, smol_and_bigg
):
    """The refusal named the first seat's budget (Smol's 2,560), whatever the others': the one
    the message comes closest to fitting (Bigg's) says how much to cut."""
    ModelAlias.objects.filter(alias="deepseek").update(context_window=4300, max_output_tokens=512)
    session = room_session(mode=RoomMode.ORCHESTRATOR, agents=smol_and_bigg)

    response = post_turn(owner_client, session, LONG_FOR_SMOL)

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["code"] == "context_budget_exceeded"
    assert detail["message"].startswith("No agent of the room fits the message. ")
    assert "Bigg's instructions" in detail["message"]
    assert detail["message"].endswith("deepseek has an input budget of 2764.")
    assert fake_gateway.calls == []
    assert_nothing_written()


def test_a_roundtable_still_refuses_a_message_one_seat_cannot_fit(
    owner_client, room_session, fake_gateway, post_turn, smol_and_bigg
):
    """Every seat answers in a roundtable: Smol's turn could not be sent."""
    session = room_session(mode=RoomMode.ROUNDTABLE, agents=smol_and_bigg)

    response = post_turn(owner_client, session, LONG_FOR_SMOL)

    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "context_budget_exceeded"
    assert "Smol's instructions" in response.json()["detail"]["message"]
    assert fake_gateway.calls == []
    assert_nothing_written()


def test_manual_mode_calls_the_tagged_agent_whose_window_fits(
    owner_client, room_session, fake_gateway, post_turn, smol_and_bigg
):
    session = room_session(agents=smol_and_bigg)

    response = post_turn(owner_client, session, LONG_FOR_SMOL)

    assert response.status_code == 201, response.json()
    assert answers(response.json()) == [("bigg", "ok")]


def test_summary_of_another_users_session_is_404_and_anonymous_401(
    owner_client, outsider_client, anon_client, room_session, fake_gateway, post_turn
):
    session = room_session()
    for index in range(8):
        post_turn(owner_client, session, f"@ada {index}")
    url = f"/api/v1/sessions/{session.id}/summary"

    assert owner_client.get(url).status_code == 200
    assert outsider_client.get(url).status_code == 404
    assert anon_client.get(url).status_code == 401


def test_a_summary_takes_what_fits_the_summarizer_and_the_next_one_goes_on_from_there(
    owner_client, room_session, fake_gateway, post_turn, settings
):
    # The summarizer (qwen here) has a small window: prune line 553, minus the prompt's 300.
    settings.PANTHEON_SUMMARIZER_MODEL_ALIAS = "qwen"
    ModelAlias.objects.filter(alias="qwen").update(context_window=2048, max_output_tokens=409)
    session = room_session()
    for index in range(1, 8):
        post_turn(owner_client, session, f"@ada number {index} " + "word " * 60)
    post_turn(owner_client, session, "@ada eighth")

    first = SessionSummary.objects.get()
    assert first.from_sequence == 1
    assert 1 < first.to_sequence < 14  # not all 14 earlier messages fit
    transcript = fake_gateway.calls_for("summary")[0].messages[-1].content
    assert "number 1 " in transcript and "number 7 " not in transcript

    for index in range(9, 17):
        post_turn(owner_client, session, f"@ada again {index}")
    latest = SessionSummary.objects.order_by("-to_sequence").first()
    assert latest.from_sequence == first.to_sequence + 1  # nothing skipped, nothing twice


def test_an_empty_summary_keeps_the_previous_one(
    owner_client, room_session, fake_gateway, post_turn
):
    session = room_session()
    for index in range(8):
        post_turn(owner_client, session, f"@ada {index}")
    assert SessionSummary.objects.count() == 1

    for reply in ('{"summary": ""}', "", '{"key_facts": ["x"]}'):
        fake_gateway.summary_reply = reply
        for index in range(8):
            post_turn(owner_client, session, f"@ada more {index}")

    assert SessionSummary.objects.count() == 1
    assert SessionSummary.objects.get().summary_text == "They talked."
    assert "They talked." in fake_gateway.calls_for("agent")[-1].messages[0].content


def test_a_due_summary_is_skipped_when_the_summarizer_alias_is_disabled(
    owner_client, room_session, fake_gateway, post_turn, settings
):
    settings.PANTHEON_SUMMARIZER_MODEL_ALIAS = "premium"
    ModelAlias.objects.filter(alias="premium").update(enabled=False)
    session = room_session()
    for index in range(8):
        assert post_turn(owner_client, session, f"@ada {index}").json()["status"] == "completed"

    assert fake_gateway.calls_for("summary") == []
    assert SessionSummary.objects.count() == 0


def test_a_direct_session_whose_agent_was_deleted_is_refused(
    owner, owner_client, trio, make_session, fake_gateway, post_turn
):
    session = make_session(owner, agent=trio[0])
    trio[0].delete()

    response = post_turn(owner_client, session, "hello?")

    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "agent_unavailable"
    assert fake_gateway.calls == []


def test_the_hot_path_renders_the_turn_exactly_as_the_serializer_does(
    owner, owner_client, room_session, fake_gateway, post_turn
):
    from sessions_app.serializers import TurnSerializer, render_turn
    from sessions_app.turns import Balance

    fake_gateway.fail["grace"] = "timeout"
    session = room_session(mode=RoomMode.ROUNDTABLE)
    post_turn(owner_client, session, "render me")
    turn = Turn.objects.get()
    messages = list(turn.messages.order_by("sequence"))
    balance = Balance(month_credits_used=Decimal("1.5"), credit_cap=Decimal("2"), low_balance=False)

    for given in (None, balance):
        context = {"messages": messages, "balance": given}
        assert render_turn(turn, messages, given) == TurnSerializer(turn, context=context).data
