"""A turn's writes are compiled once per process (`pantheon.compiled`), and each still writes
what the ORM wrote: the values prepared by their fields, an automatic key read back, the rows
its filter finds, and save() itself where the insert cannot be compiled."""

from datetime import timedelta
from decimal import Decimal
from uuid import UUID

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models.signals import post_save, pre_save
from django.db.models.sql.compiler import SQLInsertCompiler, SQLUpdateCompiler
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pantheon.compiled import Chain, CompiledInsert, CompiledUpdate, insert_together
from rooms.models import Room
from sessions_app.models import Message, Turn, TurnContextAudit, TurnStatus
from usage.models import LlmCallEvent

pytestmark = pytest.mark.django_db

turn_row, message_row, audit_row = (
    CompiledInsert(model) for model in (Turn, Message, TurnContextAudit)
)


@pytest.fixture
def write_compilations(monkeypatch) -> list[str]:
    """The INSERTs and UPDATEs Django compiles from here on."""
    compiled: list[str] = []
    for compiler in (SQLInsertCompiler, SQLUpdateCompiler):
        original = compiler.as_sql

        def as_sql(self, *args, _original=original, **kwargs):
            result = _original(self, *args, **kwargs)
            sql = result[0][0] if isinstance(result, list) else result[0]
            compiled.append(sql)
            return result

        monkeypatch.setattr(compiler, "as_sql", as_sql)
    return compiled


def test_a_turn_compiles_none_of_its_writes_again(
    owner, owner_client, make_agent, make_session, fake_gateway, post_turn, write_compilations
):
    """The turn, its messages, its ledger row and its audit are inserted, and the turn ended
    and the ledger row completed, with SQL compiled once per process."""
    session = make_session(owner, agent=make_agent(owner, "ada"))
    assert post_turn(owner_client, session, "first").status_code == 201
    write_compilations.clear()
    answer = post_turn(owner_client, session, "second")
    assert answer.status_code == 201
    tables = ("sessions_app_turn", "sessions_app_message", "sessions_app_turncontextaudit")
    hot = [
        sql
        for sql in write_compilations
        if any(f'"{table}"' in sql.split("(")[0] for table in (*tables, "usage_llmcallevent"))
    ]
    assert not hot, hot
    # ...and wrote what the ORM wrote.
    turn = Turn.objects.get(pk=answer.json()["id"])
    assert turn.status == TurnStatus.COMPLETED and turn.completed_at is not None
    assert turn.failure_code == "" and turn.progress_at == turn.completed_at  # as `end` writes
    event = LlmCallEvent.objects.get(turn=turn)
    assert event.status == "success" and event.output_tokens > 0
    assert turn.llm_calls == 1 and turn.credits == event.credits > 0
    assert [m.content for m in Message.objects.filter(turn=turn).order_by("sequence")] == [
        "second",
        answer.json()["messages"][1]["content"],
    ]
    assert TurnContextAudit.objects.get(turn=turn).history_messages_loaded == 2


def _turns_of(session_id: UUID, turn_index: int):
    return Turn.objects.filter(session_id=session_id, turn_index__gte=turn_index).running()


def test_an_update_writes_its_values_to_the_rows_its_filter_finds(owner, make_session):
    session = make_session(owner)
    now = timezone.now()
    # One running turn a session: the first ended long ago, the third failed.
    for index, status in ((1, TurnStatus.COMPLETED), (2, TurnStatus.RUNNING), (3, "failed")):
        Turn.objects.create(session=session, turn_index=index, mode="direct", status=status)
    ended = CompiledUpdate(
        _turns_of, ("status", "credits", "completed_at"), session_id=UUID, turn_index=int
    )
    later = now + timedelta(minutes=1)
    values = {"status": TurnStatus.COMPLETED, "credits": Decimal("1.25"), "completed_at": later}
    assert ended.update(values, session_id=session.pk, turn_index=1) == 1
    assert ended.update(values, session_id=str(session.pk), turn_index=1) == 0  # ended now
    rows = {turn.turn_index: turn for turn in Turn.objects.filter(session=session)}
    assert (rows[1].status, rows[1].credits, rows[1].completed_at) == ("completed", 0, None)
    assert (rows[2].status, rows[2].credits, rows[2].completed_at) == (
        "completed",
        Decimal("1.25"),
        later,
    )
    assert rows[3].status == "failed" and rows[3].completed_at is None
    # Each value prepared by its field, as `QuerySet.update` prepares it (a JSON document).
    routed = CompiledUpdate(_turns_of, ("routing",), session_id=UUID, turn_index=int)
    assert routed.update({"routing": {"to": ["ada"]}}, session_id=session.pk, turn_index=3) == 0
    Turn.objects.filter(turn_index=3).update(status=TurnStatus.RUNNING)
    assert routed.update({"routing": {"to": ["ada"]}}, session_id=session.pk, turn_index=3) == 1
    assert Turn.objects.get(session=session, turn_index=3).routing == {"to": ["ada"]}
    with pytest.raises(TypeError):
        ended.update({"status": "x"}, session_id=session.pk, turn_index=1)


def test_an_update_over_a_join_is_refused(owner, make_session):
    update = CompiledUpdate(
        lambda user_id: Turn.objects.filter(session__started_by_id=user_id),
        ("status",),
        user_id=int,
    )
    with pytest.raises(ValueError, match="joins no other table"):
        update.update({"status": "failed"}, user_id=owner.pk)


def test_an_insert_reads_back_its_automatic_key_and_is_saved(owner, make_session):
    session = make_session(owner)
    turn = Turn(session=session, turn_index=1, mode="direct")
    CompiledInsert(Turn).insert(turn)
    audit = _audit(turn)
    CompiledInsert(TurnContextAudit).insert(audit)
    assert isinstance(audit.pk, int) and not audit._state.adding
    assert TurnContextAudit.objects.get(pk=audit.pk).turn_id == turn.pk
    assert Turn.objects.get(pk=turn.pk).failure_code == ""  # its default, as save() writes


def test_an_insert_whose_model_has_receivers_is_saved_by_save(owner, make_session):
    """A receiver of `post_save` would not hear a compiled insert: save() runs instead."""
    heard = []

    def receiver(sender, instance, created, **kwargs):
        heard.append((instance.pk, created))

    post_save.connect(receiver, sender=Turn)
    try:
        turn = Turn(session=make_session(owner), turn_index=1, mode="direct")
        CompiledInsert(Turn).insert(turn)
    finally:
        post_save.disconnect(receiver, sender=Turn)
    assert heard == [(turn.pk, True)]
    assert Turn.objects.filter(pk=turn.pk).exists()


def test_rows_inserted_together_are_one_statement_and_a_conflict_fails_them_all(
    owner, make_session
):
    """On PostgreSQL a turn and its question are one INSERT statement; the turn's unique
    index refusing it (a race lost: the 409) leaves neither."""
    session = make_session(owner)
    turn = Turn(session=session, turn_index=1, mode="direct")
    question = Message(session=session, turn=turn, sequence=1, role="user", content="hi")
    audit = _audit(turn)
    rows = [(turn_row, turn), (message_row, question), (audit_row, audit)]
    with CaptureQueriesContext(connection) as queries:
        insert_together(rows)
    assert len(queries) == 1
    assert isinstance(audit.pk, int) and not question._state.adding
    assert Message.objects.get(pk=question.pk).turn_id == turn.pk
    assert TurnContextAudit.objects.get(pk=audit.pk).turn_id == turn.pk

    again = Turn(session=session, turn_index=1, mode="direct")
    answer = Message(session=session, turn=again, sequence=2, role="user", content="hi")
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_together([(turn_row, again), (message_row, answer)])
    assert not Message.objects.filter(pk=answer.pk).exists()
    assert Turn.objects.filter(session=session).count() == 1


def _audit(turn: Turn, **fields) -> TurnContextAudit:
    return TurnContextAudit(
        turn=turn,
        model_context_limit=1000,
        input_budget=900,
        estimated_tokens_before=10,
        estimated_tokens_after=10,
        history_messages_loaded=0,
        history_messages_pruned=0,
        summary_used=False,
        summary_triggered=False,
        pruned=False,
        **fields,
    )


def test_an_insert_stamps_its_automatic_times_as_save_does(owner):
    """`auto_now_add` and `auto_now` are filled by their fields' pre_save, as save() has them."""
    room = Room(owner=owner, name="Research")
    CompiledInsert(Room).insert(room)
    stored = Room.objects.get(pk=room.pk)
    assert stored.created_at is not None and stored.updated_at is not None
    assert (room.created_at, room.updated_at) == (stored.created_at, stored.updated_at)


def test_an_insert_whose_model_has_pre_save_receivers_is_saved_by_save(owner, make_session):
    """A receiver of `pre_save` may change the row before it is written: save() runs."""

    def receiver(sender, instance, **kwargs):
        instance.user_input = "said by the receiver"

    pre_save.connect(receiver, sender=Turn)
    try:
        turn = Turn(session=make_session(owner), turn_index=1, mode="direct", user_input="go")
        CompiledInsert(Turn).insert(turn)
    finally:
        pre_save.disconnect(receiver, sender=Turn)
    assert Turn.objects.get(pk=turn.pk).user_input == "said by the receiver"


def test_an_insert_keeps_a_primary_key_given_and_makes_a_missing_one_as_save_does(
    owner, make_session
):
    """save(force_insert=True) inserts an automatic key given to it, and fills a missing one
    from its field's default: so does a compiled insert (it wrote another key, and NULL)."""
    turn = Turn(session=make_session(owner), turn_index=1, mode="direct")
    turn.pk = None
    CompiledInsert(Turn).insert(turn)
    assert turn.pk is not None and Turn.objects.filter(pk=turn.pk).exists()
    audit = _audit(turn, id=987_654)
    CompiledInsert(TurnContextAudit).insert(audit)
    assert audit.pk == 987_654
    assert TurnContextAudit.objects.get(turn=turn).pk == 987_654


def test_rows_inserted_together_read_back_a_key_of_a_row_before_the_last(owner, make_session):
    """A row before the last whose key the database makes (an audit) still has it read back."""
    session = make_session(owner)
    turn = Turn(session=session, turn_index=1, mode="direct")
    turn_row.insert(turn)
    audit = _audit(turn)
    answer = Message(session=session, turn=turn, sequence=1, role="assistant", content="hi")
    insert_together([(audit_row, audit), (message_row, answer)])
    assert isinstance(audit.pk, int)
    assert TurnContextAudit.objects.get(pk=audit.pk).turn_id == turn.pk


@pytest.mark.parametrize("turn_runs", [True, False])
def test_a_chain_writes_in_one_statement_and_nothing_when_its_first_write_finds_no_row(
    owner, make_session, turn_runs
):
    """A step's writes chained (`Chain`): one statement, which writes its rows (an audit's key
    read back) when its first write finds its row, and none of them when it finds none (a turn
    no longer running: the step is refused)."""
    session = make_session(owner)
    turn = Turn(session=session, turn_index=1, mode="direct", status=TurnStatus.RUNNING)
    turn_row.insert(turn)
    if not turn_runs:
        Turn.objects.filter(pk=turn.pk).update(status=TurnStatus.INTERRUPTED)
    ending = CompiledUpdate(
        lambda turn_id: Turn.objects.filter(pk=turn_id, status=TurnStatus.RUNNING),
        ("status",),
        turn_id=UUID,
    )
    answer = Message(session=session, turn=turn, sequence=1, role="assistant", content="hi")
    audit = _audit(turn)
    chain = Chain("turn", *ending.statement({"status": TurnStatus.COMPLETED}, turn_id=turn.pk))
    assert chain.insert(message_row, answer) and chain.insert(audit_row, audit)
    with CaptureQueriesContext(connection) as queries:
        (ended,) = chain.run(["turn"])
    assert len(queries) == 1
    assert ended == int(turn_runs)
    assert Message.objects.filter(pk=answer.pk).exists() is turn_runs
    assert TurnContextAudit.objects.filter(turn=turn).exists() is turn_runs
    if turn_runs:
        assert TurnContextAudit.objects.get(turn=turn).pk == audit.pk
        assert not answer._state.adding and not audit._state.adding
    else:
        assert audit.pk is None and answer._state.adding
