"""The turn engine as a service: `turn_run(..., gateway=FakeGateway())`, no HTTP, no patching."""

import threading
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.db import connections
from django.utils import timezone

from conftest import FakeGateway
from pantheon import exceptions
from rooms.models import RoomMode
from sessions_app.models import Message, MessageStatus, Turn, TurnStatus, TurnStreamChunk
from sessions_app.selectors import session_for_turn
from sessions_app.services import turns_interrupt
from sessions_app.turns import TurnListener, turn_run
from usage.models import LlmCallEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(owner):
    def run_turn(session, message: str, gateway: FakeGateway, **extra):
        fresh = session_for_turn(user=owner, session_id=session.pk)
        return async_to_sync(turn_run)(
            session=fresh, user=owner, message=message, gateway=gateway, **extra
        )

    return run_turn


@pytest.fixture
def seats(owner, make_agent):
    return [
        make_agent(owner, "ada", model_alias="deepseek"),
        make_agent(owner, "linus", model_alias="llama"),
        make_agent(owner, "grace", model_alias="qwen"),
    ]


def test_a_direct_turn_answers_once_and_bills_its_call(owner, seats, make_session, run):
    gateway = FakeGateway()
    session = make_session(owner, agent=seats[0])

    outcome = run(session, "hello", gateway)

    assert outcome.turn.status == TurnStatus.COMPLETED
    assert [(m.sequence, m.role, m.agent_key) for m in outcome.messages] == [
        (1, "user", ""),
        (2, "assistant", "ada"),
    ]
    assert outcome.messages[1].content == "ada answers via deepseek (call 1)"
    event = LlmCallEvent.objects.get()
    assert (event.status, event.purpose, event.agent_key) == ("success", "agent", "ada")
    assert (event.input_tokens_fresh, event.input_tokens_cached, event.output_tokens) == (
        100,
        20,
        10,
    )
    stored = Turn.objects.get()
    assert (stored.llm_calls, stored.input_tokens, stored.output_tokens) == (1, 120, 10)
    assert stored.credits == event.credits == outcome.turn.credits


def test_a_roundtable_goes_on_past_a_failing_agent_and_ends_partial(
    owner, seats, make_room, make_session, run
):
    gateway = FakeGateway()
    gateway.fail["linus"] = "timeout"
    session = make_session(owner, room=make_room(owner, seats, mode=RoomMode.ROUNDTABLE))

    outcome = run(session, "plan the launch", gateway)

    assert outcome.turn.status == TurnStatus.PARTIAL
    answers = [(m.agent_key, m.status, m.error_code) for m in outcome.messages[1:]]
    assert answers == [("ada", "ok", ""), ("linus", "error", "timeout"), ("grace", "ok", "")]
    # Grace saw Ada's answer (not Linus's failure) after the user's message.
    grace_prompt = [m.content for m in gateway.calls[2].messages]
    assert grace_prompt[-2] == "plan the launch"
    assert grace_prompt[-1].startswith("[Ada @ada]: ada answers")
    assert not any(line.startswith("[Linus") for line in grace_prompt[1:])
    statuses = list(LlmCallEvent.objects.order_by("created_at").values_list("status", flat=True))
    assert statuses == ["success", "timeout", "success"]


def test_every_agent_failing_fails_the_turn_but_answers_it(
    owner, seats, make_room, make_session, run
):
    gateway = FakeGateway()
    gateway.fail.update({"ada": "provider_error", "grace": "rate_limited"})
    session = make_session(owner, room=make_room(owner, seats, mode=RoomMode.MANUAL))

    outcome = run(session, "@ada @grace anyone?", gateway)

    assert outcome.turn.status == TurnStatus.FAILED
    assert Message.objects.filter(status=MessageStatus.ERROR).count() == 2
    assert LlmCallEvent.objects.count() == 2


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["ok", "ok"], TurnStatus.COMPLETED),
        (["ok", "error"], TurnStatus.PARTIAL),
        (["error", "error"], TurnStatus.FAILED),
        ([], TurnStatus.FAILED),
    ],
)
def test_the_final_status_rule_lives_on_the_turn(statuses, expected):
    assert Turn.final_status(statuses) == expected


def test_a_role_prompt_too_large_for_the_budget_is_refused_before_any_write(
    owner, make_agent, make_session, run
):
    # deepseek's input budget is about 100k tokens; this role prompt alone is ~125k.
    agent = make_agent(owner, "verbose", role_prompt="all work and no play " * 20_000)
    session = make_session(owner, agent=agent)
    gateway = FakeGateway()

    with pytest.raises(exceptions.ContextBudgetExceeded):
        run(session, "hi", gateway)

    assert gateway.calls == []
    assert not Turn.objects.exists()
    assert not LlmCallEvent.objects.exists()


def test_a_manual_turn_without_a_valid_tag_calls_nobody(owner, seats, make_room, make_session, run):
    session = make_session(owner, room=make_room(owner, seats))
    gateway = FakeGateway()

    with pytest.raises(exceptions.NoValidTaggedAgents):
        run(session, "@nobody hello", gateway)

    assert gateway.calls == [] and not Turn.objects.exists()


class Bug(Exception):
    pass


def test_a_bug_mid_turn_fails_the_turn_and_leaves_the_call_in_doubt(
    owner, seats, make_session, run
):
    gateway = FakeGateway()

    def crash(call):
        raise Bug("the gateway itself broke")

    gateway.during_call = crash
    session = make_session(owner, agent=seats[0])

    with pytest.raises(Bug):
        run(session, "hello", gateway)

    turn = Turn.objects.get()
    assert turn.status == TurnStatus.FAILED and turn.completed_at is not None
    event = LlmCallEvent.objects.get()
    assert event.status == "lost"
    assert event.input_tokens_fresh > 0  # the input estimate stays
    # It was sent (it recorded 0 attempts, as a call never sent does); nothing was heard back.
    assert (event.attempts, event.output_tokens, event.provider) == (1, 0, "")
    assert (turn.llm_calls, turn.credits) == (1, Decimal("0"))
    # The session is free again.
    assert run(session, "again", FakeGateway()).turn.turn_index == 2


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_pending_ledger_row_is_committed_before_the_provider_is_called(
    owner, seats, make_session, run
):
    """Read from another connection while the provider works: the row is already there."""
    gateway = FakeGateway()
    seen = {}

    def look_from_another_connection(call):
        def read():
            try:
                seen["rows"] = list(
                    LlmCallEvent.objects.values_list("status", "purpose", "input_tokens_fresh")
                )
            finally:
                connections.close_all()

        reader = threading.Thread(target=read)
        reader.start()
        reader.join()

    gateway.during_call = look_from_another_connection
    session = make_session(owner, agent=seats[0])

    run(session, "hello there", gateway)

    [(status, purpose, estimate)] = seen["rows"]
    assert (status, purpose) == ("pending", "agent")
    assert estimate > 0
    assert LlmCallEvent.objects.get().status == "success"


@pytest.mark.parametrize("status", [TurnStatus.FAILED, TurnStatus.INTERRUPTED])
def test_a_turn_that_breaks_off_drops_the_text_it_was_streaming(owner, seats, make_session, status):
    """The saved text of a step in flight is no message: a failed or interrupted turn leaves
    none behind (a finished step deletes its own with its commit)."""
    session = make_session(owner, agent=seats[0])
    turn = Turn.objects.create(session=session, turn_index=1, mode="direct", user_input="hi")
    TurnStreamChunk.objects.create(turn=turn, sequence=2, start=0, text="Half an answ")

    Turn.objects.filter(pk=turn.pk).end(status)

    assert Turn.objects.get(pk=turn.pk).status == status
    assert not TurnStreamChunk.objects.filter(turn=turn).exists()


def test_a_turn_recovered_mid_answer_leaves_no_streamed_text_behind(
    owner, seats, make_session, run, settings
):
    """`recover_turns` interrupts a turn whose worker is alive, its provider still streaming
    (an age shorter than a call can take): the recovery drops the streamed text, but the
    stream's next saves wrote it again, and it stayed once the turn's step found the turn
    taken over (a row of a finished turn that nothing reads or deletes)."""
    settings.PANTHEON_STREAM_SAVE_SECONDS = 0  # every piece is saved
    session = make_session(owner, agent=seats[0])
    gateway = FakeGateway()
    gateway.word_delay = 0.01  # each save lands before the next piece

    def recover(call):
        turns_interrupt(turns=Turn.objects.running())

    gateway.during_call = recover
    heard = []

    with pytest.raises(exceptions.TurnRecovered):  # 503 turn_interrupted, as a restart's
        run(session, "hello", gateway, listener=TurnListener(send=heard.append))

    assert (heard[-1].name, heard[-1].data["code"]) == ("turn_failed", "turn_interrupted")
    assert Turn.objects.get().status == TurnStatus.INTERRUPTED
    assert not TurnStreamChunk.objects.exists()


class SilentAda(FakeGateway):
    """Ada's answers are empty (ok, as from a provider that filtered them away), or white
    space alone."""

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer

    def reply_for(self, call):
        return self.answer if call.agent_key == "ada" else super().reply_for(call)


@pytest.mark.parametrize(
    "silence",
    ["", " \n\n ", "\u00a0", "\u200b\u3000"],
    ids=["empty", "white space", "no-break space", "zero-width and ideographic spaces"],
)
def test_an_empty_answer_is_left_out_of_every_later_prompt_and_the_summary(
    owner, seats, make_room, make_session, run, silence
):
    """Ada's empty answers were sent to Linus in the same turn as `[Ada @ada]: `, to Ada in
    every later turn as an empty assistant message (which Anthropic-style APIs refuse, as one of
    white space alone), and into the summary's transcript."""
    gateway = SilentAda(silence)
    session = make_session(owner, room=make_room(owner, seats[:2], mode=RoomMode.ROUNDTABLE))

    for index in range(1, 9):  # the eighth turn sums up the seven before it
        outcome = run(session, f"point {index}", gateway)

    assert outcome.turn.status == TurnStatus.COMPLETED
    ada_answers = Message.objects.filter(agent_key="ada")
    assert [(m.status, m.content) for m in ada_answers] == [("ok", silence)] * 8  # as they came
    linus = [call for call in gateway.calls if call.agent_key == "linus"]
    assert not any("[Ada" in m.content for call in linus for m in call.messages)
    ada = [call for call in gateway.calls if call.agent_key == "ada"]
    last_prompt = [(m.role, m.content) for m in ada[-1].messages[1:]]
    assert ("assistant", silence) not in last_prompt
    assert last_prompt[:3] == [
        ("user", "point 1"),
        ("assistant", "[Linus @linus]: linus answers via llama (call 2)"),
        ("user", "point 2"),
    ]
    (summary,) = [call for call in gateway.calls if call.purpose == "summary"]
    transcript = summary.messages[-1].content
    assert "[Linus @linus]: linus answers" in transcript and "[Ada" not in transcript


def test_a_turn_every_agent_failed_is_not_summed_up(owner, seats, make_room, make_session, run):
    """The eighth turn of a session is summed up, but one whose every answer failed (the
    provider down) added nothing to sum up: the summarizer was called anyway, billed, and the
    failed turn's answer waited on it."""
    gateway = FakeGateway()
    session = make_session(owner, room=make_room(owner, seats[:2], mode=RoomMode.ROUNDTABLE))
    for index in range(1, 8):
        run(session, f"point {index}", gateway)
    gateway.fail.update({"ada": "provider_error", "linus": "timeout"})

    outcome = run(session, "point 8", gateway)

    assert outcome.turn.status == TurnStatus.FAILED
    assert [call.purpose for call in gateway.calls[-2:]] == ["agent", "agent"]
    assert not LlmCallEvent.objects.filter(purpose="summary").exists()
    assert outcome.turn.context_audit.summary_triggered is False

    gateway.fail.clear()  # the sixteenth is (the fifteenth too: its read of 40 came back full)
    for index in range(9, 17):
        run(session, f"point {index}", gateway)
    summed_up = LlmCallEvent.objects.filter(purpose="summary")
    assert 16 in summed_up.values_list("turn__turn_index", flat=True)


def test_ending_turns_from_outside_locks_the_turns_and_not_their_session(stale_turn):
    """`recover_turns`, a stale takeover, a cancel and a late answer locked each turn's session
    row too (the turn's default order is its session's: a join under FOR UPDATE), holding up
    a claim or a message in that session meanwhile (the cancel helper's catch)."""
    from django.test.utils import CaptureQueriesContext

    from sessions_app.services import turn_record_late_answer

    with CaptureQueriesContext(connections["default"]) as ended:
        turns_interrupt(turns=Turn.objects.filter(pk=stale_turn.pk))
        turn_record_late_answer(heard=LlmCallEvent(turn_id=stale_turn.pk))
    locking = [q["sql"] for q in ended.captured_queries if "FOR UPDATE" in q["sql"]]
    assert len(locking) == 2, locking
    assert not [sql for sql in locking if "sessions_app_session" in sql], locking


def test_the_session_read_for_a_turn_sees_each_change_since_the_last_read(
    owner, outsider, seats, make_session, run
):
    """The read's query is built once per process (`selectors.session_for_turn`): each call
    still reads the session as it is now, for its own user only."""
    from django.http import Http404

    session = make_session(owner, agent=seats[0])
    before = session_for_turn(user=owner, session_id=session.pk)
    assert (before.last_turn_index, before.last_sequence, before.title) == (None, None, "")

    run(session, "hello", FakeGateway())
    session.title = "renamed"
    session.save(update_fields=["title"])
    after = session_for_turn(user=owner, session_id=session.pk)
    assert (after.last_turn_index, after.last_turn_status, after.last_sequence) == (
        1,
        TurnStatus.COMPLETED,
        2,
    )
    assert (after.title, after.agent.agent_key) == ("renamed", "ada")

    with pytest.raises(Http404):
        session_for_turn(user=outsider, session_id=session.pk)
    other = make_session(outsider, agent=seats[1])
    assert session_for_turn(user=outsider, session_id=other.pk).pk == other.pk
    session.deleted_at = timezone.now()
    session.save(update_fields=["deleted_at"])
    with pytest.raises(Http404):
        session_for_turn(user=owner, session_id=session.pk)
