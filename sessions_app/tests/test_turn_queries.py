"""Per-turn work does not grow with the session: same SQL at turn 2 and turn 60."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sessions_app.models import Message, SessionSummary, Turn, TurnStatus
from usage.models import PricingVersion

pytestmark = pytest.mark.django_db

# A single-agent turn: the turn throttle (one statement checks and records), the session with
# its claim state and latest summary, the billing profile (with token auth it comes with the
# user), the roster, aliases with pricing, recent history; claim: turn with its user message
# (one statement on PostgreSQL: `pantheon.compiled.insert_together`) and the call's pending
# ledger row; last step with finish, one statement on PostgreSQL (`pantheon.compiled.Chain`):
# turn update (its row lock first), assistant message, context audit, and last the ledger row
# completed and the month's counter moved.
SINGLE_AGENT_TURN_STATEMENTS = 9
# Inside the test's transaction the 2 atomic blocks (claim, step + finish) also show a
# SAVEPOINT and a RELEASE each; in production they are BEGIN and COMMIT.
SAVEPOINT_STATEMENTS = 4
HISTORY_LIMIT = 40


def _grow_session(session, *, up_to_turn: int) -> None:
    """Append finished turns directly, as if the session had been used for a while."""
    last = Turn.objects.filter(session=session).order_by("-turn_index").first()
    sequence = Message.objects.filter(session=session).count()
    for index in range(last.turn_index + 1, up_to_turn + 1):
        turn = Turn.objects.create(
            session=session,
            turn_index=index,
            mode="manual",
            status=TurnStatus.COMPLETED,
            user_input=f"question {index}",
        )
        Message.objects.bulk_create(
            [
                Message(
                    session=session,
                    turn=turn,
                    sequence=sequence + 1,
                    role="user",
                    content=f"question {index}",
                    token_estimate=4,
                ),
                Message(
                    session=session,
                    turn=turn,
                    sequence=sequence + 2,
                    role="assistant",
                    agent_key="ada",
                    agent_name="Ada",
                    content=f"answer {index}",
                    token_estimate=3,
                ),
            ]
        )
        sequence += 2
    # A session used for a while has its summaries: one that folded all but the last exchange.
    # (With none, turn 60 reads a full history and sums up the backlog before it: a call more.)
    SessionSummary.objects.create(
        session=session, from_sequence=1, to_sequence=sequence - 2, summary_text="Q and A."
    )


def test_turn_queries_do_not_grow_with_session_length(
    owner,
    owner_client,
    make_agent,
    make_room,
    make_session,
    fake_gateway,
    post_turn,
    django_assert_num_queries,
):
    room = make_room(owner, [make_agent(owner, "ada"), make_agent(owner, "grace")])
    session = make_session(owner, room=room)
    assert post_turn(owner_client, session, "@ada first").status_code == 201

    with CaptureQueriesContext(connection) as at_turn_2:
        assert post_turn(owner_client, session, "@ada second").json()["turn_index"] == 2

    _grow_session(session, up_to_turn=59)
    queries = SINGLE_AGENT_TURN_STATEMENTS + SAVEPOINT_STATEMENTS  # exactly: none more
    with django_assert_num_queries(queries) as at_turn_60:
        assert post_turn(owner_client, session, "@ada sixtieth").json()["turn_index"] == 60

    assert len(at_turn_60) == len(at_turn_2)
    # The history read is bounded, whatever the session length.
    history_reads = [
        q["sql"]
        for q in at_turn_60
        if q["sql"].startswith('SELECT "sessions_app_message"."sequence"')
        and q["sql"].endswith(f"DESC LIMIT {HISTORY_LIMIT}")
    ]
    assert len(history_reads) == 1


def test_the_month_counter_is_moved_last_in_its_step(
    owner, owner_client, make_agent, make_session, fake_gateway, post_turn
):
    """Every turn of a user moves the same month-counter row: its lock is taken by the step's
    last write, so the user's concurrent turns queue on it only until that commit. On
    PostgreSQL the step's writes are one statement, each waiting for the one before it (the
    next one's WHERE asks whether it wrote its row): the turn's row lock first, then its
    message and audit, then the call's ledger row completed, and last the counter moved."""
    session = make_session(owner, agent=make_agent(owner, "ada"))
    assert post_turn(owner_client, session, "the month's first").status_code == 201
    with CaptureQueriesContext(connection) as queries:
        assert post_turn(owner_client, session, "hello").status_code == 201
    sql = [q["sql"] for q in queries]
    counter = [i for i, s in enumerate(sql) if 'UPDATE "usage_monthlyusage"' in s]
    assert len(counter) == 1
    moves = sql[counter[0]]
    assert sql[counter[0] + 1].startswith("RELEASE SAVEPOINT")  # the step's commit
    assert sql[counter[0] - 1].startswith("SAVEPOINT")  # the step's one statement
    writes = [
        'UPDATE "sessions_app_turn"',
        'INSERT INTO "sessions_app_message"',
        'INSERT INTO "sessions_app_turncontextaudit"',
        'UPDATE "usage_llmcallevent"',
        'UPDATE "usage_monthlyusage"',
    ]
    assert sorted(writes, key=moves.index) == writes
    gates = ["turn", "_1", "_2", "completed"]
    assert [moves.count(f"WHERE EXISTS (SELECT FROM {gate})") for gate in gates[:2]] == [1, 1]
    assert [moves.count(f"AND EXISTS (SELECT FROM {gate})") for gate in gates[2:]] == [1, 1]


def test_only_the_turns_that_stamp_a_list_first_read_its_prices_again(
    owner, owner_client, make_agent, make_session, fake_gateway, post_turn
):
    """A list may change until its first ledger row: a turn that read it before then reads its
    prices again as it stamps it, held (two statements). Once stamped it is final, and a turn
    reads its prices once, with its aliases."""
    session = make_session(owner, agent=make_agent(owner, "ada"))
    PricingVersion.objects.create(name="fresh", effective_from=timezone.now())

    def prices_read(queries) -> list[str]:
        return [q["sql"] for q in queries if "usage_pricingversion" in q["sql"]]

    with CaptureQueriesContext(connection) as first:
        assert post_turn(owner_client, session, "first on the list").status_code == 201
    with CaptureQueriesContext(connection) as second:
        assert post_turn(owner_client, session, "second").status_code == 201

    held = prices_read(first)
    assert len(held) == 2 and held[1].endswith("FOR SHARE")
    assert len([q for q in first if 'FROM "usage_modelprice"' in q["sql"]]) == 1
    assert len(prices_read(second)) == 1  # the aliases' read, with its prices
    assert not [q for q in second if 'FROM "usage_modelprice"' in q["sql"]]


def test_a_turn_compiles_none_of_its_hot_reads_again(
    owner, owner_client, make_agent, make_session, fake_gateway, post_turn, compilations
):
    """The session with its turn state and the newest history are read with SQL compiled once
    per process (`pantheon.compiled`): Django builds and compiles neither SELECT on a turn."""
    session = make_session(owner, agent=make_agent(owner, "ada"))
    assert post_turn(owner_client, session, "first").status_code == 201
    compilations.clear()
    assert post_turn(owner_client, session, "second").status_code == 201
    hot = [
        sql
        for sql in compilations
        if sql.startswith('SELECT "sessions_app_session"."id"')
        or sql.startswith('SELECT "sessions_app_message"."sequence"')
    ]
    assert not hot, hot
