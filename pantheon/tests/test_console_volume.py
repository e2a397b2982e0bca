"""The console at production volume: pages that stay bounded however many rows there are."""

import re
from urllib.parse import urlencode

import pytest
from django.core.paginator import Paginator
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pantheon.console import EitherEndPaginator
from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for
from sessions_app.models import Message, Session, Turn, TurnContextAudit
from usage.models import DailyUsageRollup, LlmCallEvent

pytestmark = pytest.mark.django_db

FIRST_ROWS = 100  # what a record's page lists of its rows


@pytest.fixture
def long_turn(owner, make_agent, make_room, make_session):
    """A roundtable turn of many steps, each with its ledger row, appended by `grow(steps)`."""
    room = make_room(owner, [make_agent(owner, "ada")], name="Research")
    session = make_session(owner, room=room)
    turn = Turn.objects.create(
        session=session, turn_index=1, mode="roundtable", status="completed", user_input="go"
    )

    def grow(steps: range) -> Turn:
        Message.objects.bulk_create(
            Message(
                session=session,
                turn=turn,
                sequence=step + 1,
                role="assistant",
                agent_key="ada",
                content=f"step {step + 1} says",
            )
            for step in steps
        )
        LlmCallEvent.objects.bulk_create(
            LlmCallEvent(
                user=owner,
                session=session,
                turn=turn,
                agent_key="ada",
                purpose="agent",
                model_alias="deepseek",
                status="success",
                latency_ms=10_000 + step + 1,
            )
            for step in steps
        )
        return turn

    return grow


def _steps_shown(page: str) -> set[int]:
    return {int(n) for n in re.findall(r"step (\d+) says", page)}


def test_a_turn_of_many_steps_lists_its_first_rows_and_links_the_rest(staff, long_turn):
    """A 400-step turn rendered 800 inline rows (1.9 MB, 1.4 s); the page lists the first 100
    of each and links the whole list."""
    turn = long_turn(range(FIRST_ROWS + 20))
    client = client_for(staff)
    client.get(url(Turn, "change", turn.pk))  # the first page a client opens reads more

    with CaptureQueriesContext(connection) as small:
        client.get(url(Turn, "change", turn.pk))
    long_turn(range(FIRST_ROWS + 20, 400))
    with CaptureQueriesContext(connection) as big:
        response = client.get(url(Turn, "change", turn.pk))

    page = response.content.decode()
    assert response.status_code == 200
    assert _steps_shown(page) == set(range(1, FIRST_ROWS + 1))
    latencies = {int(n) for n in re.findall(r"\b1(\d{4})\b", page.replace(",", ""))}
    assert latencies == set(range(1, FIRST_ROWS + 1))  # the ledger rows: the first 100 too
    query = urlencode({"q": str(turn.pk)})
    assert f"The first {FIRST_ROWS} of 400 messages" in page
    assert f'href="{url(Message, "changelist")}?{query}"' in page
    assert f"The first {FIRST_ROWS} of 400 ledger events" in page
    assert f'href="{url(LlmCallEvent, "changelist")}?{query}"' in page
    assert len(big) == len(small)


def test_a_turn_within_the_first_rows_lists_them_all_without_a_note(staff, long_turn):
    turn = long_turn(range(FIRST_ROWS))

    page = client_for(staff).get(url(Turn, "change", turn.pk)).content.decode()

    assert _steps_shown(page) == set(range(1, FIRST_ROWS + 1))
    assert "The first" not in page


# --- the big lists: read in an index's order, sortable only by what an index orders -------------


def _plan(client, model, query: dict | None = None) -> str:
    """The plan of the list's page query with sequential scans priced out: an index that can
    serve the list's order shows in it whatever the (tiny) table's size."""
    response = client.get(url(model, "changelist"), query or {})
    assert response.status_code == 200
    page = response.context["cl"].queryset[:50]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        return page.explain()


def _sortable_columns(client, model) -> list[str]:
    page = client.get(url(model, "changelist")).content.decode()
    return re.findall(r'<th scope="col" class="sortable column-([\w-]+)', page)


def test_the_message_list_reads_the_newest_first_from_an_index(staff, long_turn):
    """Half a million messages were sorted by when they were created at every page view (0.9 s;
    the last page 1.5 s): an index holds that order."""
    long_turn(range(3))
    assert "message_created" in _plan(client_for(staff), Message)


def test_the_session_list_reads_the_newest_first_from_an_index(staff, long_turn):
    """Every page view joined every session to its room, agent and user and sorted them all
    to show the newest 100 (250 ms at 50,000 sessions, its last page 0.9 s): an index holds
    that order, read backwards for the last page."""
    long_turn(range(1))
    client = client_for(staff)
    assert "Index Scan Backward using session_created" in _plan(client, Session)
    assert "Index Scan using session_created" in _plan(client, Session, {"o": "1"})


def test_the_message_list_sorts_only_by_when_a_message_was_created(staff, long_turn):
    """Sorting by its other columns read all the messages (0.6 to 1.1 s at half a million); a
    session's or turn's messages (searched by its id) come in their order anyway."""
    long_turn(range(3))
    assert _sortable_columns(client_for(staff), Message) == ["created"]


def test_the_ledger_sorts_only_by_when_and_by_whom(staff, long_turn):
    """Sorting a million ledger rows by a figure, a status or an alias read them all (1.0 to
    1.5 s); newest first is the index's order, and a user's rows are the username box's."""
    long_turn(range(3))
    assert _sortable_columns(client_for(staff), LlmCallEvent) == ["created", "username"]


def test_the_context_audit_list_reads_the_newest_first_from_an_index(staff, long_turn):
    """One audit a turn: the list joined every audit to its turn to find the newest 50 (0.5 s at
    100,000 turns); an index holds the order, and sorting is by that order only."""
    turn = long_turn(range(1))
    TurnContextAudit.objects.create(
        turn=turn,
        model_context_limit=8192,
        input_budget=5530,
        estimated_tokens_before=10,
        estimated_tokens_after=10,
    )
    client = client_for(staff)
    assert "turn_audit_created" in _plan(client, TurnContextAudit)
    assert _sortable_columns(client, TurnContextAudit) == ["created"]


@pytest.fixture
def turns_of_each_status(owner, make_agent, make_room, make_session):
    room = make_room(owner, [make_agent(owner, "ada")], name="Research")
    statuses = ["completed", "failed", "partial", "interrupted", "completed", "failed"]
    for index, status in enumerate(statuses, start=1):
        session = make_session(owner, room=room)
        Turn.objects.create(session=session, turn_index=1, status=status, user_input=str(index))


def _turn_plan(client, query: dict) -> str:
    """`_plan` over a few thousand turns (analyzed), a sort of them all priced out: the index
    that holds the order shows in it, and what is left to sort (the id, among the turns of one
    moment) is sorted as it comes."""
    session = Turn.objects.first().session
    Turn.objects.bulk_create(
        Turn(session=session, turn_index=index, status=status, user_input="x")
        for index, status in zip(
            range(2, 3002), ["completed", "failed", "partial"] * 1000, strict=True
        )
    )
    with connection.cursor() as cursor:
        cursor.execute(f'ANALYZE "{Turn._meta.db_table}"')
    response = client.get(url(Turn, "changelist"), query)
    assert response.status_code == 200
    page = response.context["cl"].queryset[:50]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        return page.explain()


def test_the_turn_list_sorts_only_by_time_user_and_status(staff, turns_of_each_status):
    """Sorting 300,000 turns by their index in the session, mode, calls or credits read them all
    (0.5-1.0 s, growing with the table)."""
    assert _sortable_columns(client_for(staff), Turn) == ["created", "user", "status_badge"]


@pytest.mark.parametrize(
    ("typed", "index"),
    [
        ("5.-0", "turn_status_newest"),  # each status newest first: 1.1-2.2 s at 300,000 turns
        ("-5.0", "turn_status_newest"),
        ("-5.-0", "turn_status_created"),
        ("5.0", "turn_status_created"),
    ],
)
def test_the_turns_sorted_by_status_then_time_are_read_from_an_index(
    staff, turns_of_each_status, typed, index
):
    plan = _turn_plan(client_for(staff), {"o": typed})

    assert index in plan
    assert "Presorted Key: sessions_app_turn.status, sessions_app_turn.created_at" in plan


@pytest.mark.parametrize(
    ("typed", "ordered"),
    [
        ("5.1.-0", {5: "asc", 0: "desc"}),  # status, then user: a whole status's turns sorted
        ("1.-5.0", {1: "asc", 0: "asc"}),
        ("5", {5: "asc", 0: "desc"}),  # then by id, unindexed
        ("-1", {1: "desc", 0: "desc"}),
        ("0", {0: "asc"}),
    ],
)
def test_the_turns_are_sorted_by_one_column_then_by_time(
    staff, turns_of_each_status, typed, ordered
):
    response = client_for(staff).get(url(Turn, "changelist"), {"o": typed})

    cl = response.context["cl"]
    assert cl.get_ordering_field_columns() == ordered
    statuses = [turn.status for turn in cl.result_list]
    if 5 in ordered:
        assert statuses == sorted(statuses)


# --- the ledger's filters and searches read the rows they list, not the whole ledger --------------


def _ledger_queries(client, query: dict) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url(LlmCallEvent, "changelist"), query)
    assert response.status_code == 200
    return [q["sql"] for q in queries if "usage_llmcallevent" in q["sql"]]


def test_the_ledger_lists_first_and_last_call_come_with_its_sums(staff, long_turn):
    """The date drill-down asked for them apart: the filtered rows read a second time (240 ms of
    a 480 ms page at 700,000 rows)."""
    turn = long_turn(range(3))
    for query in ({"status__exact": "success"}, {"q": str(turn.session_id)}):
        asked = [sql for sql in _ledger_queries(client_for(staff), query) if "MIN(" in sql]
        assert len(asked) == 1 and "SUM(" in asked[0], asked


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ({"status__exact": "pending"}, "llmcall_status_created"),
        ({"status__exact": "lost"}, "llmcall_status_created"),
        ({"priced__exact": "0"}, "llmcall_unpriced_created"),
        ({"purpose__exact": "synthesis"}, "llmcall_purpose_created"),
    ],
)
def test_the_ledger_filtered_to_the_rows_an_auditor_looks_into_reads_them_from_an_index(
    staff, long_turn, query, index
):
    """Each scanned the whole ledger, for its sums and its rows (0.34-0.55 s at 700,000)."""
    long_turn(range(3))
    assert index in _plan(client_for(staff), LlmCallEvent, query)


def test_a_request_id_is_searched_without_the_agent_keys(staff, long_turn, owner):
    """ "request id or agent key": the agent key has no index, and the OR read the whole ledger
    for each of the page's three queries (0.59 s at 700,000)."""
    turn = long_turn(range(3))

    def called(request_id: str) -> LlmCallEvent:
        return LlmCallEvent.objects.create(
            user=owner, turn=turn, agent_key="bo", purpose="agent", model_alias="deepseek",
            status="success", request_id=request_id,
        )  # fmt: skip

    first = called("gen-79a22bddec07")
    client = client_for(staff)

    queries = _ledger_queries(client, {"q": "gen-79a22bddec07"})
    found = client.get(url(LlmCallEvent, "changelist"), {"q": "gen-79a22bddec07"})

    assert [row.pk for row in found.context["cl"].result_list] == [first.pk]
    assert not any('"agent_key" =' in sql for sql in queries), queries
    # An agent key is still found, typed in capitals too; a term that could be either is the
    # request id a row has.
    keyed = client.get(url(LlmCallEvent, "changelist"), {"q": "ADA"}).context["cl"]
    assert len(keyed.result_list) == 3
    either = called("ada")
    found = client.get(url(LlmCallEvent, "changelist"), {"q": "ada"}).context["cl"]
    assert [row.pk for row in found.result_list] == [either.pk]


def test_the_context_audits_of_a_session_are_found_without_joining_every_turn(
    staff, long_turn, owner, make_session
):
    """ "its turn is X, or its turn's session is X" joined every audit to its turn (0.43 s at
    300,000 turns); the turns the term names are found first, by their indexes."""
    turn = long_turn(range(1))
    other = Turn.objects.create(
        session=make_session(owner), turn_index=1, status="completed", user_input="x"
    )
    audits = {
        t.pk: TurnContextAudit.objects.create(
            turn=t,
            model_context_limit=8192,
            input_budget=5530,
            estimated_tokens_before=10,
            estimated_tokens_after=10,
        )
        for t in (turn, other)
    }
    client = client_for(staff)

    for term in (str(turn.pk), str(turn.session_id), f"{str(turn.session_id)[:8]}…"):
        with CaptureQueriesContext(connection) as queries:
            found = client.get(url(TurnContextAudit, "changelist"), {"q": term})
        assert list(found.context["cl"].result_list) == [audits[turn.pk]], term
        wheres = [
            q["sql"].partition(" WHERE ")[2]
            for q in queries
            if "sessions_app_turncontextaudit" in q["sql"]
        ]
        assert not any('"sessions_app_turn"."session_id"' in sql for sql in wheres), wheres


# --- pages past the middle, read from the far end -----------------------------------------------


def test_every_page_holds_the_rows_djangos_paginator_would(staff, long_turn):
    """The second half's pages are read in the reverse order: the same rows, in the same order,
    orphans included."""
    long_turn(range(237))
    rows = Message.objects.order_by("-created_at", "-pk")

    for per_page, orphans in [(10, 0), (10, 3), (50, 0), (100, 37)]:
        for deep in (1_000, 30, 0):  # pages read in one go, or their ids first
            ours = EitherEndPaginator(rows, per_page, orphans=orphans)
            ours.deep = deep
            django = Paginator(rows, per_page, orphans=orphans)
            assert ours.num_pages == django.num_pages
            for number in ours.page_range:
                assert list(ours.page(number)) == list(django.page(number)), (per_page, number)


def test_a_count_taken_from_elsewhere_still_ends_at_the_oldest_row(staff, long_turn):
    """The ledger's list gets its count from the rollups: had they drifted from the rows, the
    last page read from the far end would have shifted."""
    long_turn(range(95))
    rows = LlmCallEvent.objects.order_by("-created_at", "-pk")
    oldest = list(rows)[-15:]
    paginator = EitherEndPaginator(rows, 20)
    paginator.count, paginator.count_is_exact = 97, False  # two rows more than there are

    assert list(paginator.page(5)) == oldest


def test_the_last_page_of_the_messages_skips_no_rows_to_reach_them(staff, long_turn):
    """The last page of half a million messages skipped every row before it (OFFSET: 0.95 s;
    the ledger's last page 2.2 s at a million rows); it reads them from the far end."""
    long_turn(range(250))
    client = client_for(staff)

    with CaptureQueriesContext(connection) as queries:
        response = client.get(url(Message, "changelist"), {"p": 3})

    assert response.status_code == 200
    shown = [message.sequence for message in response.context["cl"].result_list]
    assert sorted(shown) == list(range(1, 51))  # the oldest 50
    assert shown == sorted(shown, reverse=True)  # newest first, as the list is
    listed = [
        q["sql"] for q in queries if "sessions_app_message" in q["sql"] and "LIMIT" in q["sql"]
    ]
    assert listed and not any("OFFSET" in sql for sql in listed), listed


def test_the_last_page_of_the_sessions_skips_no_rows_to_reach_them(staff, owner):
    """The last page of 50,000 sessions skipped every session before it (OFFSET 49,900: a
    sort of them all, 0.9 s); it reads them from the far end, as the record lists do."""
    Session.objects.bulk_create(Session(started_by=owner, title=f"chat {n}") for n in range(250))
    client = client_for(staff)

    with CaptureQueriesContext(connection) as queries:
        response = client.get(url(Session, "changelist"), {"p": 3})

    assert response.status_code == 200
    shown = [session.pk for session in response.context["cl"].result_list]
    oldest = list(Session.objects.order_by("-created_at", "-pk").values_list("pk", flat=True))
    assert shown == oldest[200:]  # the oldest 50, newest first as the list is
    listed = [
        q["sql"] for q in queries if "sessions_app_session" in q["sql"] and "LIMIT" in q["sql"]
    ]
    assert listed and not any("OFFSET" in sql for sql in listed), listed


def test_a_big_list_of_every_row_shows_postgresqls_estimate_of_them(staff, long_turn, monkeypatch):
    """Each view of the message list counted every message (COUNT(*): 0.5 s at 1.8 million,
    the turns' 0.13 s at 600,000): a list of a big table's rows, unfiltered, shows the number
    PostgreSQL's statistics hold; a filtered one is counted, and the last page still ends at
    the oldest row."""
    monkeypatch.setattr(EitherEndPaginator, "estimated_from", 100, raising=False)  # "big"
    long_turn(range(250))
    with connection.cursor() as cursor:
        cursor.execute(f'ANALYZE "{Message._meta.db_table}"')
    client = client_for(staff)

    with CaptureQueriesContext(connection) as queries:
        response = client.get(url(Message, "changelist"))

    assert response.status_code == 200
    assert response.context["cl"].result_count == 250
    assert "about 250 messages" in response.content.decode()  # not said as if counted
    counts = [q["sql"] for q in queries if q["sql"].startswith("SELECT COUNT(*)")]
    assert not [sql for sql in counts if "sessions_app_message" in sql], counts
    last = client.get(url(Message, "changelist"), {"p": 3}).context["cl"].result_list
    assert sorted(message.sequence for message in last) == list(range(1, 51))
    with CaptureQueriesContext(connection) as filtered:
        response = client.get(url(Message, "changelist"), {"role__exact": "assistant"})
    assert response.context["cl"].result_count == 250
    assert "about" not in response.content.decode().split('class="paginator"')[1]
    assert any(q["sql"].startswith("SELECT COUNT(*)") for q in filtered.captured_queries)


def test_the_last_page_of_a_list_grown_past_its_estimate_shows_one_page_of_rows(
    staff, long_turn, monkeypatch
):
    """PostgreSQL's estimate lags the rows added since the table was last analyzed (autovacuum
    waits for a tenth of them to change): the last page ran from where the estimate put its
    start to the real far end, every row added since on one page (200,000 rows for a table of
    two million). It shows a page of the oldest rows, as a last page does."""
    monkeypatch.setattr(EitherEndPaginator, "estimated_from", 100, raising=False)  # "big"
    long_turn(range(250))
    with connection.cursor() as cursor:
        cursor.execute(f'ANALYZE "{Message._meta.db_table}"')
    long_turn(range(250, 550))  # not analyzed yet: the estimate still says 250
    client = client_for(staff)

    response = client.get(url(Message, "changelist"), {"p": 3})

    assert response.status_code == 200
    assert "about 250 messages" in response.content.decode()
    last = response.context["cl"].result_list
    assert sorted(message.sequence for message in last) == list(range(1, 101))


def test_the_rollup_list_reads_no_distinct_over_every_rollup(staff, owner):
    """Each view of the daily rollups ran two DISTINCTs over all of them, for the years of its
    date drill-down and the aliases of its filter (1.1 s and 0.7 s at 1.3 million rollups):
    the years come from the first and last day, the aliases from their table."""
    from datetime import date

    DailyUsageRollup.objects.bulk_create(
        DailyUsageRollup(day=day, user=owner, model_alias="deepseek")
        for day in (date(2025, 6, 1), date(2026, 1, 2), date(2026, 11, 30))
    )
    client = client_for(staff)

    with CaptureQueriesContext(connection) as queries:
        response = client.get(url(DailyUsageRollup, "changelist"))

    page = response.content.decode()
    assert response.status_code == 200
    assert "day__year=2025" in page and "day__year=2026" in page
    assert "model_alias=deepseek" in page
    distinct = [q["sql"] for q in queries if "DISTINCT" in q["sql"]]
    assert not distinct, distinct
    in_2026 = client.get(url(DailyUsageRollup, "changelist"), {"day__year": "2026"})
    assert "day__month=11" in in_2026.content.decode()
    assert len(in_2026.context["cl"].result_list) == 2


@pytest.mark.parametrize("model", [Turn, Message, LlmCallEvent, TurnContextAudit])
def test_a_page_deep_in_a_list_finds_its_ids_in_an_index_then_reads_its_rows(
    staff, long_turn, monkeypatch, model
):
    """A page in the middle of a big list skipped whole rows, joined to their users, sessions
    and rooms, only to drop them (1.1 s for the context audits' page 1518, 0.9 s for the turns'
    page 1500): its ids come from an index on (created_at, id) alone, then its rows by id."""
    turn = long_turn(range(250))
    TurnContextAudit.objects.bulk_create(
        TurnContextAudit(
            turn=Turn.objects.create(
                session=turn.session, turn_index=index, status="completed", user_input="x"
            ),
            model_context_limit=8192,
            input_budget=5530,
            estimated_tokens_before=10,
            estimated_tokens_after=10,
        )
        for index in range(2, 252)
    )
    with connection.cursor() as cursor:
        for table in (Turn, Message, LlmCallEvent, TurnContextAudit):
            cursor.execute(f'ANALYZE "{table._meta.db_table}"')
    monkeypatch.setattr(EitherEndPaginator, "deep", 50)
    client = client_for(staff)
    table = model._meta.db_table

    with CaptureQueriesContext(connection) as queries:
        response = client.get(url(model, "changelist"), {"p": 2})

    assert response.status_code == 200
    shown = [row.pk for row in response.context["cl"].result_list]
    newest_first = model.objects.order_by("-created_at", "-pk").values_list("pk", flat=True)
    assert shown == list(newest_first[100:200])
    [ids] = [q["sql"] for q in queries if q["sql"].startswith(f'SELECT "{table}"."id" AS "pk"')]
    assert "OFFSET 100" in ids
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("SET LOCAL enable_incremental_sort = off")
        cursor.execute(f"EXPLAIN {ids}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Sort" not in plan and "_created" in plan, plan


@pytest.mark.parametrize("model", [LlmCallEvent, Message])
def test_a_sort_typed_by_a_column_the_list_does_not_offer_is_dropped(staff, long_turn, model):
    """`?o=` by a column the header no longer offers still sorted the whole table by it."""
    long_turn(range(30))
    client = client_for(staff)
    columns = client.get(url(model, "changelist")).context["cl"].list_display
    newest_first = list(model.objects.order_by("-created_at", "-pk").values_list("pk", flat=True))

    for typed in (f"{columns.index('status')}", f"-{columns.index('status')}.x.99"):
        response = client.get(url(model, "changelist"), {"o": typed})
        cl = response.context["cl"]
        assert [row.pk for row in cl.result_list] == newest_first
        # The header shows the list's own order: newest first.
        assert cl.get_ordering_field_columns() == {columns.index("created"): "desc"}
    # An offered column still sorts.
    created = str(columns.index("created"))
    oldest_first = client.get(url(model, "changelist"), {"o": created}).context["cl"].result_list
    assert [row.pk for row in oldest_first] == newest_first[::-1]


def test_rows_not_ordered_down_to_their_key_are_paged_as_django_does(staff, long_turn):
    """A record's history is ordered by time alone: read in reverse, rows that tie could come
    in another order and shift across a page's edge."""
    long_turn(range(30))
    rows = LlmCallEvent.objects.order_by("created_at")

    with CaptureQueriesContext(connection) as queries:
        page = list(EitherEndPaginator(rows, 10).page(3))

    assert page == list(rows)[20:]
    assert "OFFSET 20" in queries[-1]["sql"]
