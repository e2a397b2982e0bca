"""The operator console: branded, records read-only for everyone, soft deletes, the roles."""

import gc
import re
import warnings
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.utils import label_for_field
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.test import AsyncClient, Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from pantheon import draining
from pantheon.error_views import permission_denied
from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for, opened
from rooms.models import Agent, Room, RoomAgent
from rooms.services import agent_delete
from sessions_app.models import (
    IdempotencyKey,
    Message,
    Session,
    SessionSummary,
    Turn,
    TurnContextAudit,
)
from usage.models import (
    BillingProfile,
    DailyUsageRollup,
    LlmCallEvent,
    ModelAlias,
    ModelPrice,
    MonthlyUsage,
)
from usage.rollups import rollup_rebuild
from usage.services import usage_month_add

pytestmark = pytest.mark.django_db

User = get_user_model()
ONE_DAY = timedelta(days=1)

RECORDS = [Turn, Message, SessionSummary, TurnContextAudit, LlmCallEvent]
MODELS_WITH_A_USER_BOX = [Room, Session, Turn, LlmCallEvent, BillingProfile]


@pytest.fixture
def chat(owner, make_agent, make_room, make_session):
    agent = make_agent(owner, "ada")
    room = make_room(owner, [agent], name="Research")
    session = make_session(owner, room=room)
    turn = Turn.objects.create(
        session=session, turn_index=1, mode="manual", status="completed", user_input="@ada hi"
    )
    message = Message.objects.create(
        session=session, turn=turn, sequence=2, role="assistant", agent_key="ada", content="Hi!"
    )
    Message.objects.create(session=session, turn=turn, sequence=1, role="user", content="@ada hi")
    event = LlmCallEvent.objects.create(
        user=owner,
        session=session,
        turn=turn,
        agent_key="ada",
        purpose="agent",
        model_alias="deepseek",
        status="success",
        credits=Decimal("0.0123"),
    )
    summary = SessionSummary.objects.create(
        session=session, turn=turn, from_sequence=1, to_sequence=2, summary_text="Hi."
    )
    audit = TurnContextAudit.objects.create(
        turn=turn,
        model_context_limit=8192,
        input_budget=5530,
        estimated_tokens_before=10,
        estimated_tokens_after=10,
    )
    return {
        "room": room,
        "session": session,
        "rows": {
            Turn: turn,
            Message: message,
            SessionSummary: summary,
            TurnContextAudit: audit,
            LlmCallEvent: event,
        },
    }


# --- branding -----------------------------------------------------------------------------------


def test_the_console_is_branded_pantheon_and_links_the_billing_dashboard(staff):
    page = client_for(staff).get(reverse("admin:index")).content.decode()

    assert "<title>Operator console | Pantheon</title>" in page
    assert ">Pantheon</a>" in page
    assert "Django administration" not in page
    assert reverse("admin:billing") in page


def test_the_header_offers_no_view_site_link_to_a_page_that_does_not_exist(staff, client):
    page = client_for(staff).get(reverse("admin:index")).content.decode()

    assert "View site" not in page and 'href="/"' not in page
    assert client.get("/").status_code == 404  # there is no user-facing site


def test_the_login_page_is_branded_too(client):
    page = client.get(reverse("admin:login")).content.decode()

    assert "Pantheon" in page and "Django administration" not in page


# --- records are records ------------------------------------------------------------------------


@pytest.mark.parametrize("model", RECORDS, ids=lambda model: model.__name__)
def test_a_superuser_cannot_add_change_or_delete_a_record(staff, chat, model):
    client = client_for(staff)
    row = chat["rows"][model]
    before = {field.attname: getattr(row, field.attname) for field in model._meta.concrete_fields}

    assert client.get(url(model, "add")).status_code == 403
    assert client.post(url(model, "add"), {}).status_code == 403
    assert client.get(url(model, "change", row.pk)).status_code == 200  # read-only view
    assert client.post(url(model, "change", row.pk), {"status": "failed"}).status_code == 403
    assert client.get(url(model, "delete", row.pk)).status_code == 403
    assert client.post(url(model, "delete", row.pk), {"post": "yes"}).status_code == 403
    bulk = client.post(
        url(model, "changelist"), {"action": "delete_selected", "_selected_action": [row.pk]}
    )
    assert bulk.status_code in (200, 302, 403)

    row.refresh_from_db()
    assert {f.attname: getattr(row, f.attname) for f in model._meta.concrete_fields} == before


def test_the_turn_page_shows_its_messages_ledger_events_and_audit(staff, chat):
    turn = chat["rows"][Turn]

    page = client_for(staff).get(url(Turn, "change", turn.pk)).content.decode()

    assert "Hi!" in page  # the assistant's message
    assert "Ledger events" in page and "0.0123" in page
    assert "Context audit" in page and "5,530" in page  # as the audit list writes it
    assert 'name="_save"' not in page  # nothing to save


def test_the_turn_page_shows_figures_and_moments_as_the_lists_do(staff, chat):
    turn = chat["rows"][Turn]
    moment = datetime(2026, 12, 3, 7, 39, 21, tzinfo=UTC)
    Turn.objects.filter(pk=turn.pk).update(
        credits=Decimal("0.16617"), provider_cost_usd=Decimal("0.0001234"), created_at=moment
    )
    LlmCallEvent.objects.create(
        user=turn.session.started_by,
        session=turn.session,
        turn=turn,
        purpose="summary",
        model_alias="deepseek",
        status="success",
        credits=Decimal("0.16617"),
        created_at=moment,
    )

    page = client_for(staff).get(url(Turn, "change", turn.pk)).content.decode()

    assert "0.1661700000" not in page and "0.0001234000" not in page
    assert page.count('<span title="0.16617">0.1662</span>') == 2  # the turn and its event
    assert "0.000123" in page
    assert "2026-12-03 07:39:21 UTC" in page
    assert "Dec. 3, 2026" not in page
    assert 'class="column-credits' in page  # the inline's columns keep their names


def test_the_turn_page_marks_a_lost_call_neither_priced_nor_unpriced(staff, chat):
    turn = chat["rows"][Turn]
    common = {"user": turn.session.started_by, "session": turn.session, "turn": turn}
    LlmCallEvent.objects.create(**common, purpose="agent", model_alias="deepseek", priced=True)
    LlmCallEvent.objects.create(**common, purpose="agent", model_alias="qwen", status="lost")

    page = client_for(staff).get(url(Turn, "change", turn.pk)).content.decode()

    # Django's icons for True and None; a lost call had no usage to price (no red cross).
    cells = re.findall(r'<td class="field-priced_flag">(.*?)</td>', page, re.DOTALL)
    icons = sorted(re.search(r"icon-(\w+)\.svg", cell).group(1) for cell in cells)
    events = LlmCallEvent.objects.filter(turn=turn)
    unpriced = events.filter(priced=False).exclude(status="lost").count()
    assert len(icons) == events.count()
    assert icons.count("unknown") == 1  # the lost call
    assert icons.count("no") == unpriced


def test_the_turn_list_shows_who_where_and_what_it_cost(staff, chat, owner):
    page = client_for(staff).get(url(Turn, "changelist")).content.decode()

    for column in ("column-created", "column-user", "column-room_or_agent", "column-index"):
        assert column in page
    for column in ("column-mode", "column-status_badge", "column-calls", "column-credits_used"):
        assert column in page
    assert "Research" in page and "owner" in page and "completed" in page


@pytest.mark.parametrize(
    "term",
    ["turn_id", "session_id", "owner", "OWNER", "resea"],
)
def test_turns_are_found_by_turn_id_session_id_username_or_room(staff, chat, term):
    turn = chat["rows"][Turn]
    term = {"turn_id": str(turn.pk), "session_id": str(chat["session"].pk)}.get(term, term)

    response = client_for(staff).get(url(Turn, "changelist"), {"q": term})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [turn]


@pytest.mark.parametrize(
    "spelt", [str, lambda short: f"{short}…", lambda short: f" {short} ", str.upper]
)
def test_turns_are_found_by_the_short_ids_the_pages_print(staff, chat, spelt):
    """A turn's page reads "Context audit of turn ce868eaa…": that searched found nothing, only
    the whole id did."""
    turn = chat["rows"][Turn]
    short = str(turn.pk)[:8]
    client = client_for(staff)

    found = client.get(url(Turn, "changelist"), {"q": spelt(short)})
    by_session = client.get(url(Turn, "changelist"), {"q": str(chat["session"].pk)[:12]})

    assert list(found.context["cl"].result_list) == [turn]
    assert list(by_session.context["cl"].result_list) == [turn]
    other = "0" * 8 if not short.startswith("0") else "f" * 8
    assert list(client.get(url(Turn, "changelist"), {"q": other}).context["cl"].result_list) == []


def test_a_search_that_matches_nothing_finds_nothing(staff, chat):
    response = client_for(staff).get(url(Turn, "changelist"), {"q": "nobody-here"})

    assert list(response.context["cl"].result_list) == []


def test_turns_filter_by_username_status_and_mode(staff, chat, outsider, make_agent, make_session):
    other = make_session(outsider, agent=make_agent(outsider, "bob"))
    Turn.objects.create(session=other, turn_index=1, mode="direct", status="failed", user_input="x")
    client = client_for(staff)

    def shown(**query) -> set:
        response = client.get(url(Turn, "changelist"), query)
        assert response.status_code == 200
        return {turn.session.started_by.username for turn in response.context["cl"].result_list}

    assert shown() == {"owner", "outsider"}
    assert shown(username="outsider") == {"outsider"}
    assert shown(status="completed") == {"owner"}
    assert shown(mode="direct") == {"outsider"}
    assert shown(username="owner", status="failed") == set()


def test_the_username_box_is_headed_as_djangos_own_filters(staff, chat):
    """The box's heading read "↓By user" beside Django's "↓ By status": no space after the
    marker, which Django's template writes into the summary."""
    page = client_for(staff).get(url(Turn, "changelist")).content.decode()

    headings = dict(
        re.findall(
            r'<details data-filter-title="([^"]+)" open>\s*<summary>(.*?)</summary>', page, re.S
        )
    )

    assert headings["user"] == headings["status"].replace("status", "user")
    assert " By user " in headings["user"]


# --- soft deletes -------------------------------------------------------------------------------


def test_deleting_a_session_in_the_admin_is_the_apis_soft_delete(staff, chat):
    session = chat["session"]
    client = client_for(staff)

    confirm = client.get(url(Session, "delete", session.pk))
    assert confirm.status_code == 200
    response = client.post(url(Session, "delete", session.pk), {"post": "yes"})

    assert response.status_code == 302
    session.refresh_from_db()
    assert session.deleted_at is not None
    assert Turn.objects.filter(session=session).count() == 1  # nothing cascaded
    assert Message.objects.filter(session=session).count() == 2


def test_an_owner_who_deletes_a_session_is_sent_back_to_the_sessions_list(make_operator, chat):
    """Owners view sessions and may delete them, not change them: Django sent them to the
    console's home page."""
    session = chat["session"]
    client = client_for(make_operator("Owner", "boss"))
    delete = url(Session, "delete", session.pk) + "?_changelist_filters=q%3DResearch"

    response = client.post(delete, {"post": "yes"})

    assert response.status_code == 302
    assert response.url == url(Session, "changelist") + "?q=Research"
    session.refresh_from_db()
    assert session.deleted_at is not None
    listed = client.get(response.url)
    assert listed.status_code == 200
    assert [str(m) for m in listed.context["messages"]] == [
        f"The session {str(session).removeprefix('Session ')} was deleted successfully."
    ]


def test_a_direct_session_whose_agent_was_deleted_says_so_as_the_turns_list_does(
    staff, owner, make_agent, make_room, make_session
):
    """Its agent column and field read "-", as for a room's session, where the turns list
    says "(deleted agent)"."""
    ada, bo = make_agent(owner, "ada"), make_agent(owner, "bo")
    orphan = make_session(owner, agent=ada, title="Orphan")
    kept = make_session(owner, agent=bo, title="Kept")
    make_session(owner, room=make_room(owner, [bo]), title="Roomy")
    Turn.objects.create(session=orphan, turn_index=1, mode="direct", user_input="hi")
    agent_delete(agent=ada)
    client = client_for(staff)

    listed = client.get(url(Session, "changelist")).content.decode()
    page = client.get(url(Session, "change", orphan.pk)).content.decode()
    kept_page = client.get(url(Session, "change", kept.pk)).content.decode()
    turns = client.get(url(Turn, "changelist")).content.decode()

    rows = re.findall(
        r'<td class="field-agent_name">([^<]*)</td><td class="field-title">([^<]*)</td>', listed
    )
    assert sorted(rows) == [("(deleted agent)", "Orphan"), ("-", "Roomy"), ("Bo (@bo)", "Kept")]
    assert '<div class="readonly">(deleted agent)</div>' in page
    assert f'<a href="{url(Agent, "change", bo.pk)}">Bo (@bo)</a>' in kept_page
    assert "(deleted agent)" in turns


def test_a_sessions_delete_pages_name_it_once_as_a_session(staff, owner, make_session):
    """A session's name says it is one ("Session “Roundtable demo” · e59bbb36…"): its delete
    page read "Delete the session “Session “Roundtable demo” · e59bbb36…”?", and so did the
    message after it and the page of its typed-in delete URL once deleted. A room's name is
    its own, and its kind is said before it."""
    session = make_session(owner, title="Roundtable demo")
    short = str(session.pk)[:8]
    client = client_for(staff)

    confirm = client.get(url(Session, "delete", session.pk)).content.decode()
    done = client.post(url(Session, "delete", session.pk), {"post": "yes"}, follow=True)
    again = client.get(url(Session, "delete", session.pk))

    assert f"Delete the session “Roundtable demo” · {short}…? It goes from the API" in confirm
    assert [str(message) for message in done.context["messages"]] == [
        f"The session “Roundtable demo” · {short}… was deleted successfully."
    ]
    assert again.status_code == 403
    assert f"<p>Session “Roundtable demo” · {short}… is kept: it was deleted on" in (
        again.content.decode()
    )
    assert "Session “Session" not in confirm + again.content.decode()


@pytest.mark.parametrize(
    ("button", "then"),
    [("_save", ""), ("_continue", " You may edit it again below.")],
)
def test_a_saved_session_is_named_once_as_a_session(staff, owner, make_session, button, then):
    """Django's message after a save read "The session “Session “Roundtable demo” ·
    e59bbb36…” was changed successfully." (the session's name says it is one). It names it as
    the delete message does, still a link to its page."""
    session = make_session(owner, title="Roundtable demo")
    short = str(session.pk)[:8]
    client = client_for(staff)
    page = url(Session, "change", session.pk)
    form = opened(client, page, "session_form")

    saved = client.post(page, form | {"title": "Kickoff", button: "1"}, follow=True)

    assert [str(message) for message in saved.context["messages"]] == [
        f'The <a href="{page}">session “Kickoff” · {short}…</a> was changed successfully.{then}'
    ]
    assert "Session “Session" not in saved.content.decode()


def test_a_saved_billing_profile_is_named_once_as_one(staff, owner):
    """It read "The billing profile “Billing profile of owner” was added successfully.", and
    changed alike: a profile's name says it is one, as a session's does."""
    client = client_for(staff)

    added = client.post(url(BillingProfile, "add"), {"user": owner.pk, "no_cap": "on"}, follow=True)
    profile = BillingProfile.objects.get(user=owner)
    page = url(BillingProfile, "change", profile.pk)
    form = opened(client, page, "billingprofile_form")
    changed = client.post(page, form | {"is_suspended": "on"}, follow=True)

    assert [str(message) for message in added.context["messages"]] == [
        f'The <a href="{page}">billing profile of owner</a> was added successfully.'
    ]
    assert [str(message) for message in changed.context["messages"]] == [
        f'The <a href="{page}">billing profile of owner</a> was changed successfully.'
    ]


def test_a_row_whose_name_is_its_own_keeps_djangos_message(staff, owner):
    room = Room.objects.create(owner=owner, name="Research")
    client = client_for(staff)
    page = url(Room, "change", room.pk)
    form = opened(client, page, "room_form")

    saved = client.post(page, form | {"goal": "Find out"}, follow=True)

    assert [str(message) for message in saved.context["messages"]] == [
        f'The room “<a href="{page}">Research</a>” was changed successfully.'
    ]


def test_a_session_deleted_while_its_page_was_open_is_not_saved_and_says_why(
    staff, make_operator, chat
):
    """Saved from a tab opened before the session was deleted (in another tab): Django answered
    a bare "403 Forbidden". Its page again, read-only, saying why; nothing saved."""
    session = chat["session"]
    client = client_for(staff)
    change = url(Session, "change", session.pk)
    assert 'name="title"' in client.get(change).content.decode()  # editable when opened
    deleted = client.post(url(Session, "delete", session.pk), {"post": "yes"}, follow=True)
    assert deleted.status_code == 200  # the list, saying so

    saved = client.post(f"{change}?_changelist_filters=q%3Dx", {"title": "Renamed"})

    assert saved.status_code == 302
    assert saved.url == f"{change}?_changelist_filters=q%3Dx"
    page = client.get(saved.url)
    session.refresh_from_db()
    assert [str(message) for message in page.context["messages"]] == [
        "Your changes were not saved: it was deleted in the meantime.",
        f"Deleted on {session.deleted_at:%Y-%m-%d %H:%M:%S} UTC: it stays, read-only, for its "
        "history.",
    ]
    assert 'name="title"' not in page.content.decode()
    assert session.title != "Renamed"
    # Its room deleted, a session is read-only too.
    room = chat["room"]
    other = Session.objects.create(room=room, started_by=session.started_by)
    other_page = url(Session, "change", other.pk)
    client.post(url(Room, "delete", room.pk), {"post": "yes"}, follow=True)
    refused = client.post(other_page, {"title": "Renamed"}, follow=True)
    assert [str(message) for message in refused.context["messages"]][0] == (
        "Your changes were not saved: it became read-only in the meantime."
    )
    assert Session.objects.get(pk=other.pk).title != "Renamed"
    # Who may change no session still gets Django's 403.
    analyst = client_for(make_operator("Analyst"))
    assert analyst.post(change, {"title": "Renamed"}).status_code == 403


def test_a_sessions_owner_room_and_agent_cannot_be_changed_in_the_admin(
    staff, chat, outsider, make_agent, make_room
):
    session = chat["session"]
    elsewhere = make_room(outsider, name="Elsewhere")
    client = client_for(staff)

    page = client.get(url(Session, "change", session.pk)).content.decode()
    assert 'name="title"' in page
    for field in ("started_by", "room", "agent"):
        assert f'name="{field}"' not in page
    response = client.post(
        url(Session, "change", session.pk),
        {
            "title": "Renamed",
            "started_by": outsider.pk,
            "room": elsewhere.pk,
            "agent": make_agent(outsider, "bob").pk,
        },
    )

    assert response.status_code == 302
    session.refresh_from_db()
    assert session.title == "Renamed"
    assert (session.started_by_id, session.room_id, session.agent_id) == (
        chat["room"].owner_id,
        chat["room"].pk,
        None,
    )


def test_sessions_are_not_added_in_the_admin(staff, owner, chat):
    client = client_for(staff)
    form = {"title": "By hand", "started_by": owner.pk, "room": chat["room"].pk}

    assert client.get(url(Session, "add")).status_code == 403
    assert client.post(url(Session, "add"), form).status_code == 403
    assert not Session.objects.filter(title="By hand").exists()


def test_the_bulk_delete_action_soft_deletes_rooms(staff, chat, owner, make_room):
    other = make_room(owner, name="Other")
    client = client_for(staff)
    selected = {"action": "delete_selected", "_selected_action": [chat["room"].pk, other.pk]}

    assert client.post(url(Room, "changelist"), selected).status_code == 200  # confirmation
    response = client.post(url(Room, "changelist"), {**selected, "post": "yes"})

    assert response.status_code == 302
    assert Room.objects.count() == 2
    assert Room.objects.filter(deleted_at__isnull=False).count() == 2
    assert Session.objects.filter(pk=chat["session"].pk).exists()


def test_deleting_an_already_deleted_room_is_refused_with_its_first_deletion_time(staff, chat):
    room = chat["room"]
    earlier = datetime(2026, 11, 30, 9, 15, 0, tzinfo=UTC)
    Room.objects.filter(pk=room.pk).update(deleted_at=earlier)
    client = client_for(staff)

    page = client.get(url(Room, "change", room.pk)).content.decode()
    typed = client.get(url(Room, "delete", room.pk))
    posted = client.post(url(Room, "delete", room.pk), {"post": "yes"})

    assert url(Room, "delete", room.pk) not in page  # no delete link
    assert typed.status_code == posted.status_code == 403
    assert "it was deleted on 2026-11-30 09:15:00 UTC already." in typed.content.decode()
    room.refresh_from_db()
    assert room.deleted_at == earlier
    assert not LogEntry.objects.filter(object_id=str(room.pk)).exists()


def test_the_delete_pages_say_the_row_stays(staff, chat, owner, make_room):
    """Django's pages said the room "and all of the following related items will be deleted"."""
    client = client_for(staff)
    room = chat["room"]

    one = client.get(url(Room, "delete", room.pk)).content.decode()
    bulk = client.post(
        url(Room, "changelist"),
        {"action": "delete_selected", "_selected_action": [room.pk]},
    ).content.decode()
    session = client.get(url(Session, "delete", chat["session"].pk)).content.decode()

    assert "will be deleted" not in one + bulk + session
    assert "Delete the room “Research”? It goes from the API at once" in one
    assert "marked deleted and read-only with its seats; its sessions, turns and ledger" in one
    assert "Delete the selected room? Each goes from the API at once" in bulk
    assert "deleted already" not in bulk  # none of the selected was
    assert "It goes from the API at once (it answers 404 and takes no more turns; a turn" in session


def test_the_bulk_delete_leaves_rows_deleted_already_as_they_were(staff, chat, owner, make_room):
    room, other = chat["room"], make_room(owner, name="Other")
    earlier = datetime(2026, 11, 30, 9, 15, 0, tzinfo=UTC)
    Room.objects.filter(pk=room.pk).update(deleted_at=earlier)
    client = client_for(staff)
    both = {"action": "delete_selected", "_selected_action": [room.pk, other.pk]}

    alone = client.post(url(Room, "changelist"), {**both, "_selected_action": [room.pk]})
    confirm = client.post(url(Room, "changelist"), both)
    response = client.post(url(Room, "changelist"), {**both, "post": "yes"}, follow=True)

    assert "were deleted already: there is nothing to delete" in alone.content.decode()
    assert "<li>Other</li>" in confirm.content.decode()
    assert "The 1 selected that was deleted already stays as it is." in confirm.content.decode()
    assert "<li>Research</li>" not in confirm.content.decode()
    assert "Successfully deleted 1 room." in response.content.decode()
    room.refresh_from_db()
    other.refresh_from_db()
    assert room.deleted_at == earlier and other.deleted_at is not None
    assert [entry.object_repr for entry in LogEntry.objects.all()] == ["Other"]
    history = client.get(url(Room, "history", other.pk)).content.decode()
    assert "Deleted: gone from the API, kept here read-only." in history


# --- roles --------------------------------------------------------------------------------------


def test_an_owner_changes_configuration(make_operator, owner):
    client = client_for(make_operator("Owner", "boss"))
    price = ModelPrice.objects.get(model_alias__alias="llama")
    form = {
        "pricing_version": price.pricing_version_id,
        "model_alias": price.model_alias_id,
        "credit_multiplier": "1.25",
        "input_usd_per_mtok": "0.3",
        "cached_input_usd_per_mtok": "",
        "output_usd_per_mtok": "0.5",
    }

    response = client.post(url(ModelPrice, "change", price.pk), form)

    assert response.status_code == 302
    price.refresh_from_db()
    assert (price.credit_multiplier, price.input_usd_per_mtok) == (Decimal("1.25"), Decimal("0.3"))
    for model in (ModelAlias, BillingProfile, Room):
        assert client.get(url(model, "add")).status_code == 200


def test_an_owner_never_changes_records(make_operator, chat):
    client = client_for(make_operator("Owner", "boss"))
    turn = chat["rows"][Turn]

    assert client.get(url(Turn, "changelist")).status_code == 200
    assert client.post(url(Turn, "change", turn.pk), {"status": "failed"}).status_code == 403
    assert client.get(url(LlmCallEvent, "add")).status_code == 403
    turn.refresh_from_db()
    assert turn.status == "completed"
    # A session may be deleted, softly: its turns and messages stay.
    assert (
        client.post(url(Session, "delete", chat["session"].pk), {"post": "yes"}).status_code == 302
    )
    assert Turn.objects.filter(pk=turn.pk).exists()


@pytest.mark.parametrize(
    "model",
    [Turn, Message, LlmCallEvent, ModelAlias, ModelPrice, BillingProfile, Room, Session],
    ids=lambda model: model.__name__,
)
def test_an_analyst_sees_everything_and_changes_nothing(make_operator, chat, owner, model):
    client = client_for(make_operator("Analyst"))
    BillingProfile.objects.create(user=owner)
    row = (
        chat["rows"].get(model)
        or {Room: chat["room"], Session: chat["session"]}.get(model)
        or model.objects.first()
    )

    assert client.get(url(model, "changelist")).status_code == 200
    assert client.get(url(model, "change", row.pk)).status_code == 200
    assert client.get(url(model, "add")).status_code == 403
    assert client.post(url(model, "change", row.pk), {}).status_code == 403
    assert client.post(url(model, "delete", row.pk), {"post": "yes"}).status_code == 403
    assert model.objects.filter(pk=row.pk).exists()


# --- users and billing profiles -----------------------------------------------------------------


def test_the_user_page_shows_the_months_credits_cap_and_status(staff, owner):
    usage_month_add(user_id=owner.pk, at=timezone.now(), credits=Decimal("3.5"))
    BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("10"), is_suspended=True)

    page = client_for(staff).get(reverse("admin:auth_user_change", args=[owner.pk])).content
    page = page.decode()

    assert "Billing this month" in page
    assert "3.5" in page and "10" in page and "suspended" in page
    # As the billing profile list writes them.
    assert "3.5000" in page and "10.0000" in page


def test_the_user_page_links_to_the_billing_profile_or_creates_one(staff, owner):
    client = client_for(staff)
    user_page = reverse("admin:auth_user_change", args=[owner.pk])

    page = client.get(user_page).content.decode()
    add = f"{reverse('admin:usage_billingprofile_add')}?user={owner.pk}"
    assert f'href="{add}">Create billing profile</a>' in page
    form = client.get(add).content.decode()
    assert f'name="user" value="{owner.pk}"' in form  # the user is filled in

    profile = BillingProfile.objects.create(user=owner)
    page = client.get(user_page).content.decode()
    change = reverse("admin:usage_billingprofile_change", args=[profile.pk])
    assert f'href="{change}">Billing profile</a>' in page
    assert "Create billing profile" not in page


def test_an_analyst_may_open_a_user_page(make_operator, owner):
    client = client_for(make_operator("Analyst"))

    assert client.get(reverse("admin:auth_user_change", args=[owner.pk])).status_code == 200
    assert client.post(reverse("admin:auth_user_change", args=[owner.pk]), {}).status_code == 403


@pytest.mark.parametrize("role", ["Owner", "Analyst"])
def test_who_may_not_change_users_is_offered_no_password_reset(make_operator, owner, role):
    """The button led to a 403."""
    client = client_for(make_operator(role, "operator"))
    page = client.get(reverse("admin:auth_user_change", args=[owner.pk])).content.decode()

    assert "Reset password" not in page and "../password/" not in page
    assert "set (only who may change users can reset it)" in page
    password_page = reverse("admin:auth_user_password_change", args=[owner.pk])
    assert client.get(password_page).status_code == 403


@pytest.mark.parametrize("role", ["Owner", "Analyst"])
def test_who_may_not_revoke_tokens_reads_the_tokens_date_alone(make_operator, owner, role):
    """Owners and Analysts were told to revoke the token "from the users' list", which offers
    them no action; and under the username, its input's rules ("Required. 150 characters or
    fewer...") on a page with no input."""
    Token.objects.create(user=owner)
    client = client_for(make_operator(role, "operator"))

    page = client.get(reverse("admin:auth_user_change", args=[owner.pk])).content.decode()
    users = client.get(reverse("admin:auth_user_changelist")).content.decode()

    assert re.search(r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</div>", page)
    assert "revoke it" not in page
    assert 'name="action"' not in users  # the list has no actions for them
    assert "Required. 150 characters or fewer" not in page
    assert "Unselect this instead of deleting accounts" not in page


def test_who_may_revoke_tokens_is_told_where(staff, make_operator, owner):
    Token.objects.create(user=owner)
    changer = make_operator("Analyst", "changer")
    changer.user_permissions.add(Permission.objects.get(codename="change_user"))

    for user in (staff, changer):
        client = client_for(user)
        page = client.get(reverse("admin:auth_user_change", args=[owner.pk])).content.decode()
        users = client.get(reverse("admin:auth_user_changelist")).content.decode()
        assert "UTC (revoke it from the users&#x27; list)" in page
        assert 'value="revoke_api_tokens"' in users
        assert "Required. 150 characters or fewer" in page  # an input, with its rules


def test_who_may_change_users_is_led_to_the_password_page(staff, make_operator, owner):
    """A superuser resets a password there; anyone else who may change users turns password
    login off (pantheon/tests/test_console_least_privilege.py)."""
    changer = make_operator("Analyst", "changer")
    changer.user_permissions.add(Permission.objects.get(codename="change_user"))

    for user, offered in ((staff, "Reset password"), (changer, "Turn password login off")):
        client = client_for(user)
        page = client.get(reverse("admin:auth_user_change", args=[owner.pk])).content.decode()
        assert offered in page
        password_page = reverse("admin:auth_user_password_change", args=[owner.pk])
        assert client.get(password_page).status_code == 200


@pytest.fixture
def profiles(owner, outsider):
    return [
        BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("10")),
        BillingProfile.objects.create(user=outsider),
    ]


def act(client, action: str, profiles, **extra):
    return client.post(
        url(BillingProfile, "changelist"),
        {"action": action, "_selected_action": [p.pk for p in profiles], **extra},
    )


def test_the_actions_say_one_user_or_users(make_operator, staff, profiles, owner, outsider):
    """They said "Suspended 1 user(s)." and "Revoked the API token of 2 user(s).": a word
    that fits the count now, as Django's own delete action says it."""
    client = client_for(make_operator("Owner", "boss"))
    (capped, uncapped) = profiles

    def said(response) -> list[str]:
        return [str(message) for message in client.get(response.url).context["messages"]]

    one = said(act(client, "suspend", [capped]))
    two = said(act(client, "suspend", profiles))
    back = said(act(client, "reactivate", profiles))
    cap_one = said(act(client, "set_cap", [uncapped], apply="1", cap="5"))
    cap_two = said(act(client, "set_cap", profiles, apply="1", cap="7"))
    for user in (owner, outsider):
        Token.objects.create(user=user)
    client = client_for(staff)
    tokens = said(
        client.post(
            url(User, "changelist"),
            {"action": "revoke_api_tokens", "_selected_action": [owner.pk, outsider.pk]},
        )
    )

    assert one == ["Suspended 1 user."]
    assert two == ["Suspended 1 user."]  # the other was suspended already
    assert back == ["Reactivated 2 users."]
    assert cap_one == ["Set a cap of 5.0000 for 1 user."]
    assert cap_two == ["Set a cap of 7.0000 for 2 users."]
    assert tokens == ["Revoked the API tokens of 2 users."]


def test_suspend_and_reactivate_are_logged_per_profile(make_operator, profiles):
    operator = make_operator("Owner", "boss")
    client = client_for(operator)

    assert act(client, "suspend", profiles).status_code == 302
    assert [p.is_suspended for p in BillingProfile.objects.order_by("pk")] == [True, True]
    assert act(client, "suspend", profiles[:1]).status_code == 302  # no change, no log
    assert act(client, "reactivate", profiles[1:]).status_code == 302

    entries = LogEntry.objects.filter(user=operator, action_flag=CHANGE).order_by("pk")
    assert [(e.object_id, e.change_message) for e in entries] == [
        (str(profiles[0].pk), "Suspended."),
        (str(profiles[1].pk), "Suspended."),
        (str(profiles[1].pk), "Reactivated."),
    ]


def _running_turn_of(user, make_agent, make_session):
    session = make_session(user, agent=make_agent(user, f"ada{user.pk}"))
    return Turn.objects.create(
        session=session, turn_index=1, mode="direct", status="running", user_input="go"
    )


def test_suspending_a_user_ends_their_running_turns(
    make_operator, profiles, owner, outsider, make_agent, make_session
):
    """The cost tester's find: a roundtable under way when its user was suspended made every
    one of its four calls, billed, while the next turn was refused (403 account_suspended).
    Suspended, the user's running turns end as their own cancel would; another user's run on."""
    mine = _running_turn_of(owner, make_agent, make_session)
    theirs = _running_turn_of(outsider, make_agent, make_session)
    client = client_for(make_operator("Owner", "boss"))

    answer = act(client, "suspend", profiles[:1])
    assert answer.status_code == 302
    said = [str(m) for m in get_messages(answer.wsgi_request)]
    assert said == ["Suspended 1 user. Ended 1 running turn of theirs."]
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert (mine.status, mine.failure_code) == ("interrupted", "turn_cancelled")
    assert theirs.status == "running"

    # Reactivated: nothing of theirs is ended.
    assert act(client, "reactivate", profiles).status_code == 302
    theirs.refresh_from_db()
    assert theirs.status == "running"


def test_a_profile_ticked_suspended_on_its_page_ends_the_users_running_turns(
    make_operator, profiles, owner, make_agent, make_session
):
    running = _running_turn_of(owner, make_agent, make_session)
    client = client_for(make_operator("Owner", "boss"))
    page = url(BillingProfile, "change", profiles[0].pk)
    form = opened(client, page, "billingprofile_form")

    assert client.post(page, form).status_code == 302  # saved as it was: not suspended
    running.refresh_from_db()
    assert running.status == "running"

    answer = client.post(page, form | {"is_suspended": "on"}, follow=True)
    assert answer.status_code == 200
    assert "Ended 1 running turn of theirs." in answer.content.decode()
    running.refresh_from_db()
    assert (running.status, running.failure_code) == ("interrupted", "turn_cancelled")


def test_a_page_that_ends_running_turns_says_so_after_its_save(
    make_operator, staff, profiles, owner, make_agent, make_session
):
    """The save's own message (what was changed) comes first, then what the change ended: the
    page read "Ended 1 running turn of theirs." above it, an ending before its cause. The
    billing profile's page and the user's say it alike."""
    _running_turn_of(owner, make_agent, make_session)
    client = client_for(make_operator("Owner", "boss"))
    page = url(BillingProfile, "change", profiles[0].pk)
    form = opened(client, page, "billingprofile_form")

    answer = client.post(page, form | {"is_suspended": "on"}, follow=True)

    said = [str(message) for message in answer.context["messages"]]
    assert len(said) == 2 and "was changed successfully" in said[0]
    assert said[1] == "Ended 1 running turn of theirs."

    make_session(owner, agent=make_agent(owner, "grace")).turns.create(
        turn_index=1, mode="direct", status="running", user_input="go"
    )
    staff_client = client_for(staff)
    page = url(User, "change", owner.pk)
    form = opened(staff_client, page, "user_form")
    form.pop("is_active", None)  # unticked

    answer = staff_client.post(page, form, follow=True)

    said = [str(message) for message in answer.context["messages"]]
    assert len(said) == 2 and "was changed successfully" in said[0]
    assert said[1] == "Ended 1 running turn of theirs."


def test_a_profile_added_suspended_ends_the_users_running_turns(
    make_operator, owner, outsider, make_agent, make_session
):
    """A user with no profile yet runs turns unchecked: the add page's ticked box suspends them
    as the action does, their running turns ended, another user's not."""
    mine = _running_turn_of(owner, make_agent, make_session)
    theirs = _running_turn_of(outsider, make_agent, make_session)
    client = client_for(make_operator("Owner", "boss"))

    added = client.post(
        url(BillingProfile, "add"),
        {"user": owner.pk, "no_cap": "on", "is_suspended": "on"},
        follow=True,
    )
    assert added.status_code == 200
    assert BillingProfile.objects.get(user=owner).is_suspended
    assert "Ended 1 running turn of theirs." in added.content.decode()
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert (mine.status, mine.failure_code) == ("interrupted", "turn_cancelled")
    assert theirs.status == "running"

    # Added not suspended: nothing of theirs ends.
    client.post(url(BillingProfile, "add"), {"user": outsider.pk, "no_cap": "on"})
    theirs.refresh_from_db()
    assert theirs.status == "running"


def test_reactivating_a_user_leaves_their_running_turn_alone(
    make_operator, profiles, owner, make_agent, make_session
):
    """A turn a suspended user still runs (claimed as the suspension committed) is not ended by
    their reactivation, nor said to be."""
    BillingProfile.objects.filter(pk=profiles[0].pk).update(is_suspended=True)
    running = _running_turn_of(owner, make_agent, make_session)
    client = client_for(make_operator("Owner", "boss"))

    answer = act(client, "reactivate", profiles[:1])
    assert [str(m) for m in get_messages(answer.wsgi_request)] == ["Reactivated 1 user."]
    running.refresh_from_db()
    assert running.status == "running"


def test_a_suspended_users_turn_running_in_this_process_is_stopped_once_committed(
    make_operator,
    profiles,
    owner,
    make_agent,
    make_session,
    monkeypatch,
    django_capture_on_commit_callbacks,
):
    """The worker running the turn in this process is told at once (`draining.stop`: its
    provider call abandoned), after the suspension commits, not at its next write."""
    running = _running_turn_of(owner, make_agent, make_session)
    client = client_for(make_operator("Owner", "boss"))
    stopped = []
    monkeypatch.setattr(draining, "stop", stopped.append)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        act(client, "suspend", profiles[:1])
        assert stopped == []  # not before the commit
    assert len(callbacks) == 1
    assert stopped == [running.pk]


def test_set_cap_asks_for_the_cap_then_applies_and_logs_it(make_operator, profiles):
    operator = make_operator("Owner", "boss")
    client = client_for(operator)

    form = act(client, "set_cap", profiles)
    assert form.status_code == 200
    assert "Monthly credit cap" in form.content.decode()
    assert act(client, "set_cap", profiles, apply="1", cap="-1").status_code == 200  # refused
    assert BillingProfile.objects.get(pk=profiles[1].pk).monthly_credit_cap is None

    assert act(client, "set_cap", profiles, apply="1", cap="250").status_code == 302
    assert {p.monthly_credit_cap for p in BillingProfile.objects.all()} == {Decimal("250")}
    # An empty box (what a number box sends when letters were typed in it) lifts nothing.
    emptied = act(client, "set_cap", profiles[:1], apply="1", cap="")
    assert emptied.status_code == 200
    assert "or tick “No cap” to lift it." in emptied.content.decode()
    assert BillingProfile.objects.get(pk=profiles[0].pk).monthly_credit_cap == Decimal("250")
    both = act(client, "set_cap", profiles[:1], apply="1", cap="5", no_cap="on")
    assert both.status_code == 200
    lifted = act(client, "set_cap", profiles[:1], apply="1", cap="", no_cap="on")
    assert lifted.status_code == 302
    assert BillingProfile.objects.get(pk=profiles[0].pk).monthly_credit_cap is None

    messages = list(
        LogEntry.objects.filter(user=operator)
        .order_by("pk")
        .values_list("change_message", flat=True)
    )
    # Each from what that user had, as a change on the profile's page is logged.
    assert messages == [
        "Set monthly credit cap: 10 → 250.",
        "Set monthly credit cap: no cap → 250.",
        "Set monthly credit cap: 250 → no cap.",
    ]


def test_the_set_cap_page_says_each_users_cap_and_what_they_used_apart(
    make_operator, profiles, owner
):
    """It read "bob (now: 12)", 12 being bob's cap, under "credits this calendar month": as if
    he had used 12 credits."""
    usage_month_add(user_id=owner.pk, at=timezone.now(), credits=Decimal("0.2016"))

    page = act(client_for(make_operator("Owner", "boss")), "set_cap", profiles).content.decode()

    rows = re.findall(
        r"<tr><td>(\w+)</td><td class=\"num\">([^<]*)</td>"
        r"<td class=\"num\">([^<]*)</td></tr>",
        page,
    )
    assert rows == [("outsider", "no cap", "0.0000"), ("owner", "10.0000", "0.2016")]
    assert "cap now (credits a month)" in page and "credits used this month" in page
    assert "(now:" not in page


def test_an_analyst_cannot_run_the_billing_actions(
    make_operator, profiles, owner, make_agent, make_session
):
    running = _running_turn_of(owner, make_agent, make_session)
    client = client_for(make_operator("Analyst"))

    response = act(client, "suspend", profiles)

    assert response.status_code in (200, 302, 403)
    assert not BillingProfile.objects.filter(is_suspended=True).exists()
    assert not LogEntry.objects.exists()
    running.refresh_from_db()
    assert running.status == "running"  # nor ends a user's turn


# --- timestamps on the editable pages -----------------------------------------------------------

DJANGO_DATETIME = re.compile(r"[A-Z][a-z]{2}\.? \d{1,2}, \d{4}, \d{1,2}(:\d\d)? [ap]\.m\.")


def _stamp(model, pk, **times) -> None:
    model.objects.filter(pk=pk).update(**times)


def test_agents_rooms_and_sessions_show_their_times_as_the_records_do(staff, chat, owner):
    """Before, their lists and pages wrote 'Dec. 3, 2026, 7:39 a.m.' beside record pages'
    '2026-12-03 07:39:21 UTC'; a deleted room's deleted_at stays out of its form."""
    created = datetime(2026, 12, 3, 7, 39, 21, tzinfo=UTC)
    deleted = datetime(2026, 12, 4, 8, 0, 5, tzinfo=UTC)
    room, session, agent = chat["room"], chat["session"], Agent.objects.get(owner=owner)
    _stamp(Room, room.pk, created_at=created, updated_at=created, deleted_at=deleted)
    _stamp(Session, session.pk, created_at=created, deleted_at=deleted)
    _stamp(Agent, agent.pk, created_at=created, updated_at=created)
    client = client_for(staff)

    for obj in (room, session, agent):
        listed = client.get(url(type(obj), "changelist")).content.decode()
        page = client.get(url(type(obj), "change", obj.pk)).content.decode()
        assert "2026-12-03 07:39:21" in listed, type(obj)
        assert "2026-12-03 07:39:21 UTC" in page, type(obj)
        assert not DJANGO_DATETIME.search(listed) and not DJANGO_DATETIME.search(page), type(obj)
        assert 'name="created_at' not in page and 'name="deleted_at' not in page
    assert "2026-12-04 08:00:05 UTC" in client.get(url(Room, "change", room.pk)).content.decode()


def test_a_deleted_room_and_its_seats_are_read_only(staff, chat):
    room = chat["room"]
    deleted = datetime(2026, 12, 4, 8, 0, 5, tzinfo=UTC)
    _stamp(Room, room.pk, deleted_at=deleted)
    seat = RoomAgent.objects.get(room=room)
    client = client_for(staff)

    page = client.get(url(Room, "change", room.pk))
    response = client.post(
        url(Room, "change", room.pk),
        {
            "name": "Renamed",
            "current_mode": room.current_mode,
            "seats-TOTAL_FORMS": "0",
            "seats-INITIAL_FORMS": "0",
        },
    )
    seat_page = client.get(url(RoomAgent, "change", seat.pk))

    html = page.content.decode()
    assert page.status_code == 200 and "View room" in html and 'name="name"' not in html
    assert "Deleted on 2026-12-04 08:00:05 UTC: it stays, read-only, for its history." in html
    assert 'name="seats-0-agent"' not in html  # the seats inline is read-only too
    # Refused: the page again, read-only, saying why (not Django's bare 403).
    assert response.status_code == 302 and response.url == url(Room, "change", room.pk)
    room.refresh_from_db()
    assert room.name == "Research" and room.deleted_at == deleted
    assert seat_page.status_code == 200 and 'name="agent"' not in seat_page.content.decode()


def test_a_seat_cannot_be_added_to_a_deleted_room(staff, chat, owner, make_agent):
    room = chat["room"]
    _stamp(Room, room.pk, deleted_at=timezone.now())
    agent = make_agent(owner, "bob")

    response = client_for(staff).post(
        url(RoomAgent, "add"), {"room": room.pk, "agent": agent.pk, "position": 2}
    )

    assert response.status_code == 200
    assert "This room was deleted: its seats stay as they were." in response.content.decode()
    assert not RoomAgent.objects.filter(agent=agent).exists()


def test_rooms_and_sessions_filter_deleted_or_not(staff, chat, owner, make_room):
    gone = make_room(owner, name="Gone")
    _stamp(Room, gone.pk, deleted_at=timezone.now())
    client = client_for(staff)

    page = client.get(url(Room, "changelist"), {"_facets": "True"}).content.decode()
    live = client.get(url(Room, "changelist"), {"deleted_at__isempty": "1"})
    deleted = client.get(url(Room, "changelist"), {"deleted_at__isempty": "0"})
    sessions = client.get(url(Session, "changelist")).content.decode()

    assert "By deleted" in page and "By deleted at" not in page
    assert "not deleted (1)" in page and ">deleted (1)" in page and "Not empty" not in page
    assert [room.name for room in live.context["cl"].result_list] == ["Research"]
    assert [room.name for room in deleted.context["cl"].result_list] == ["Gone"]
    assert ">not deleted</a>" in sessions and ">deleted</a>" in sessions


def _listed(client, model, name, **query) -> set:
    """`name` of each row a console list shows, filtered by `query`."""
    response = client.get(url(model, "changelist"), query)
    assert response.status_code == 200
    return {name(row) for row in response.context["cl"].result_list}


def test_a_session_in_a_deleted_room_is_filtered_as_deleted(staff, chat, owner, make_session):
    """Its own page said the room was deleted, while the list's filter put it under "not
    deleted": the filter answers as the API does (a session goes with its room)."""
    gone = make_session(owner, room=chat["room"], title="In the room")
    mine = make_session(owner, title="Direct")
    dropped = make_session(owner, title="Dropped")
    _stamp(Session, dropped.pk, deleted_at=datetime(2026, 12, 2, 9, 0, tzinfo=UTC))
    _stamp(Room, chat["room"].pk, deleted_at=datetime(2026, 12, 3, 10, 0, 5, tzinfo=UTC))
    client = client_for(staff)

    def listed(**query) -> set:
        return _listed(client, Session, lambda session: session.pk, **query)

    page = client.get(url(Session, "changelist"), {"deleted_at__isempty": "0"}).content.decode()

    assert listed(deleted_at__isempty="1") == {mine.pk}
    assert listed(deleted_at__isempty="0") == {chat["session"].pk, gone.pk, dropped.pk}
    assert listed() == {chat["session"].pk, gone.pk, mine.pk, dropped.pk}
    # Its "deleted" column says when and why, where it was blank.
    assert "2026-12-03 10:00:05 (its room)" in page and "2026-12-02 09:00:00<" in page


def test_the_turn_list_says_whose_session_or_room_was_deleted(
    staff, chat, owner, make_agent, make_session
):
    """The sessions list said a session in a deleted room was deleted ("… (its room)") and
    filtered it so; the turns list showed its turns as any others'."""
    in_room = chat["rows"][Turn]
    dropped = make_session(owner, agent=make_agent(owner, "bo"), title="Dropped")
    direct = make_session(owner, agent=Agent.objects.get(agent_key="ada"), title="Direct")
    for session in (dropped, direct):
        Turn.objects.create(session=session, turn_index=1, mode="direct", status="completed")
    _stamp(Session, dropped.pk, deleted_at=datetime(2026, 12, 2, 9, 0, tzinfo=UTC))
    _stamp(Room, chat["room"].pk, deleted_at=datetime(2026, 12, 3, 10, 0, 5, tzinfo=UTC))
    client = client_for(staff)

    def listed(**query) -> set:
        return _listed(client, Turn, lambda turn: turn.session.title or "In the room", **query)

    page = client.get(url(Turn, "changelist")).content.decode()

    assert "column-session_deleted" in page and "Session deleted (UTC)" in page
    assert "2026-12-03 10:00:05 (its room)" in page and "2026-12-02 09:00:00<" in page
    assert listed() == {"In the room", "Dropped", "Direct"}
    assert listed(session__deleted_at__isempty="1") == {"Direct"}
    assert listed(session__deleted_at__isempty="0") == {"In the room", "Dropped"}
    assert ">not deleted</a>" in page and "By session deleted" in page
    assert in_room.session.room_id == chat["room"].pk


def test_the_turn_list_reads_deleted_sessions_and_rooms_with_its_rows(
    staff, owner, make_agent, make_room, make_session, assert_constant_queries
):
    agent = make_agent(owner, "ada")
    client = client_for(staff)

    def grow(new):
        for index in new:
            room = make_room(owner, [agent], name=f"Room {index}")
            session = (
                make_session(owner, room=room) if index % 2 else make_session(owner, agent=agent)
            )
            Turn.objects.create(session=session, turn_index=1, mode="manual", status="completed")
            if index % 3 == 0:
                _stamp(Room, room.pk, deleted_at=timezone.now())
            elif index % 3 == 1:
                _stamp(Session, session.pk, deleted_at=timezone.now())

    client.get(url(Turn, "changelist"))  # the process's caches (content types) filled
    with CaptureQueriesContext(connection) as empty:
        client.get(url(Turn, "changelist"))
    responses = assert_constant_queries(
        lambda: client.get(url(Turn, "changelist")), grow=grow, expected=len(empty), api=False
    )
    assert "(its room)" in responses[-1].content.decode()


@pytest.mark.parametrize(
    "model",
    [*RECORDS, DailyUsageRollup, MonthlyUsage, IdempotencyKey, Session],
    ids=lambda model: model.__name__,
)
def test_the_big_lists_offer_no_facet_counts(staff, chat, model):
    """A count per filter choice over the whole ledger never finished at 1M rows."""
    client = client_for(staff)
    address = url(model, "changelist")
    with CaptureQueriesContext(connection) as plain:
        page = client.get(address).content.decode()
    with CaptureQueriesContext(connection) as asked:
        facets = client.get(address, {"_facets": "True"})

    assert facets.status_code == 200
    assert "Show counts" not in page and "Hide counts" not in facets.content.decode()
    assert len(asked) == len(plain)  # no count queries added


def test_asking_the_ledger_for_facet_counts_keeps_its_sums_on_the_rollups(staff, chat, owner):
    LlmCallEvent.objects.create(
        user=owner, purpose="agent", model_alias="deepseek", created_at=timezone.now() - ONE_DAY
    )
    rollup_rebuild()

    sums = (
        client_for(staff)
        .get(url(LlmCallEvent, "changelist"), {"_facets": "True", "username": "owner"})
        .context["ledger_sums"]
    )

    assert (sums["source"], sums["llm_calls"]) == ("rollups", 2)


@pytest.mark.parametrize(
    "page, query",
    [
        *(
            (url(model, "changelist"), {"username": "ow\x00ner"})
            for model in MODELS_WITH_A_USER_BOX
        ),
        (url(LlmCallEvent, "changelist"), {"model_alias": "deep\x00seek"}),
        # Django's own filters passed it on to PostgreSQL: each was a 500.
        (url(Turn, "changelist"), {"status__exact": "\x00"}),
        (url(Turn, "changelist"), {"mode__exact": "x\x00"}),
        (url(LlmCallEvent, "changelist"), {"purpose__exact": "\x00"}),
        (url(Message, "changelist"), {"role__exact": "\x00"}),
        (url(Room, "changelist"), {"current_mode__exact": "\x00"}),
        (url(Agent, "changelist"), {"model_alias": "\x00"}),
        (url(DailyUsageRollup, "changelist"), {"model_alias": "\x00"}),
        (url(Session, "changelist"), {"q": "a\x00"}),
        (reverse("admin:billing"), {"user": "ow\x00ner"}),
        (reverse("admin:billing_export"), {"alias": "\x00"}),
    ],
)
def test_a_nul_in_a_console_address_is_a_400_not_a_500(staff, chat, page, query):
    response = client_for(staff).get(page, query)

    assert response.status_code == 400
    assert "holds a NUL character" in response.content.decode()


@pytest.mark.parametrize(
    "model, action",
    [
        (User, "revoke_api_tokens"),  # integer keys
        (BillingProfile, "set_cap"),
        (ModelPrice, "delete_selected"),
        (Room, "delete_selected"),  # UUID keys
        (ModelAlias, "delete_selected"),
    ],
)
@pytest.mark.parametrize("value", ["abc", "", "-1x"])
def test_an_action_on_a_selection_that_is_no_id_is_a_400_and_does_nothing(
    staff, chat, model, action, value
):
    """A hand-made or tampered action post: Django filtered the list by the value and failed."""
    logged = LogEntry.objects.count()

    response = client_for(staff).post(
        url(model, "changelist"),
        {"action": action, "_selected_action": [value], "no_cap": "on"},
    )

    assert response.status_code == 400
    assert "no id of this list: nothing was done" in response.content.decode()
    assert LogEntry.objects.count() == logged


def test_an_action_on_real_ids_still_runs(staff, chat):
    room = chat["room"]

    response = client_for(staff).post(
        url(Room, "changelist"),
        {"action": "delete_selected", "_selected_action": [str(room.pk)], "post": "yes"},
    )

    assert response.status_code == 302
    room.refresh_from_db()
    assert room.deleted_at is not None


@pytest.mark.parametrize("model, field", [(LlmCallEvent, "created_at"), (DailyUsageRollup, "day")])
@pytest.mark.parametrize("parts", [["9999"], ["9999", "12"], ["9999", "12", "31"]])
def test_a_date_drill_down_at_the_calendars_end_is_an_invalid_filter_not_a_500(
    staff, chat, model, field, parts
):
    query = {
        f"{field}__{part}": value
        for part, value in zip(["year", "month", "day"], parts, strict=False)
    }

    response = client_for(staff).get(url(model, "changelist"), query)

    # Django's answer to any filter it cannot apply: back to the list, flagged invalid.
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


def test_a_date_drill_down_within_the_calendar_still_narrows_the_ledger(staff, chat):
    event = LlmCallEvent.objects.get()
    year = event.created_at.year

    within = client_for(staff).get(url(LlmCallEvent, "changelist"), {"created_at__year": year})
    before = client_for(staff).get(url(LlmCallEvent, "changelist"), {"created_at__year": year - 1})

    assert list(within.context["cl"].result_list) == [event]
    assert list(before.context["cl"].result_list) == []


def test_a_history_page_writes_its_moments_as_the_console_does(staff, chat):
    agent = Agent.objects.get(agent_key="ada")
    changed = datetime(2026, 12, 3, 14, 5, 9, tzinfo=UTC)
    LogEntry.objects.log_actions(staff.pk, [agent], CHANGE, change_message="Renamed.")
    LogEntry.objects.update(action_time=changed)

    page = client_for(staff).get(url(Agent, "history", agent.pk)).content.decode()

    # Django's own format read "Dec. 3, 2026, 2:05 p.m.".
    assert "2026-12-03 14:05:09 UTC" in page and "p.m." not in page


def test_a_ledger_events_history_page_is_its_own_history_not_the_ledgers(staff, chat, owner):
    """The ledger list's sums gave the history's paginator its count (the ledger's rows) and,
    opened from a filtered list, summed the log entries by ledger columns: a 500."""
    event = chat["rows"][LlmCallEvent]
    LlmCallEvent.objects.create(user=owner, purpose="agent", model_alias="deepseek")
    client = client_for(staff)

    filtered = client.get(
        url(LlmCallEvent, "history", event.pk), {"_changelist_filters": "status__exact=success"}
    )
    assert filtered.status_code == 200
    assert "change history" in filtered.content.decode()  # none yet

    LogEntry.objects.log_actions(staff.pk, [event], CHANGE, change_message="Looked at it.")
    page = client.get(url(LlmCallEvent, "history", event.pk)).content.decode()
    assert "Looked at it." in page
    assert re.search(r"\b1 entry\b", page) and "2 entries" not in page


# --- users --------------------------------------------------------------------------------------


def test_a_user_the_ledger_names_is_kept_and_the_page_says_so_at_once(staff, chat, owner):
    """Django collected every ledger row to list it as protected: 20 s for 200,000 rows."""
    client = client_for(staff)
    page = url(User, "delete", owner.pk)
    with CaptureQueriesContext(connection) as one_row:
        client.get(page)
    event = chat["rows"][LlmCallEvent]
    for _ in range(20):
        LlmCallEvent.objects.create(
            user=owner, session=event.session, turn=event.turn, purpose="agent", status="success"
        )
    with CaptureQueriesContext(connection) as many_rows:
        typed = client.get(page)
    posted = client.post(page, {"post": "yes"})
    bulk = client.post(
        url(User, "changelist"), {"action": "delete_selected", "_selected_action": [owner.pk]}
    )

    assert typed.status_code == posted.status_code == 403
    assert "the usage ledger names them" in typed.content.decode()
    assert "untick Active" in bulk.content.decode()
    assert "run manage.py forget_user for one who asked to be forgotten" in typed.content.decode()
    assert len(many_rows) == len(one_row)
    assert User.objects.filter(pk=owner.pk).exists()


def test_an_operator_who_acted_in_the_console_is_kept_with_the_history_they_wrote(
    staff, make_operator, outsider
):
    """Deleting a user deleted the admin log entries naming them as who made a change (a
    CASCADE): the history of what an Owner changed lost the change."""
    boss = make_operator("Owner", username="boss")
    owners = client_for(boss)
    owners.post(url(BillingProfile, "add"), {"user": outsider.pk, "no_cap": "on"})
    profile = url(BillingProfile, "change", BillingProfile.objects.get(user=outsider).pk)
    form = opened(owners, profile, "billingprofile_form")
    assert owners.post(profile, form | {"is_suspended": "on"}).status_code == 302
    written = list(LogEntry.objects.filter(user=boss).values_list("pk", flat=True))
    client = client_for(staff)
    page = url(User, "delete", boss.pk)

    typed = client.get(page)
    posted = client.post(page, {"post": "yes"})
    bulk = client.post(
        url(User, "changelist"),
        {"action": "delete_selected", "_selected_action": [boss.pk], "post": "yes"},
    )

    assert typed.status_code == posted.status_code == 403
    assert "the admin log names them" in typed.content.decode()
    assert "untick Active" in typed.content.decode()
    assert "the admin log names them" in bulk.content.decode()
    assert "untick Active" in bulk.content.decode()
    assert User.objects.filter(pk=boss.pk).exists()
    assert (
        written and list(LogEntry.objects.filter(user=boss).values_list("pk", flat=True)) == written
    )


def test_a_user_whose_only_log_entries_are_their_own_accounts_is_still_deleted(staff, outsider):
    """A password changed outside the console (`changepassword`) writes the revocation of the
    token into the account's own history, naming the account: no change of anything else."""
    Token.objects.create(user=outsider)
    outsider.set_password("another-pass-456")
    outsider.save()
    assert LogEntry.objects.filter(user=outsider).exists()

    response = client_for(staff).post(url(User, "delete", outsider.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not User.objects.filter(pk=outsider.pk).exists()


@pytest.mark.parametrize("bulk", [False, True])
def test_a_users_billing_profile_goes_with_them(staff, make_operator, outsider, bulk):
    """A profile refuses a delete of its own (it would lift a cap and a suspension unsaid), and
    Django took that for a reason to keep its user: any user an Owner had given a profile was
    refused ("your account doesn't have permission to delete ... billing profile"), a 403
    even for a superuser."""
    owners = client_for(make_operator("Owner", username="boss"))
    owners.post(url(BillingProfile, "add"), {"user": outsider.pk, "no_cap": "on"})
    profile = BillingProfile.objects.get(user=outsider)
    client = client_for(staff)
    if bulk:
        page, confirm = url(User, "changelist"), {"action": "delete_selected", "post": "yes"}
        asked = {"action": "delete_selected", "_selected_action": [outsider.pk]}
        shown = client.post(page, asked)
        confirm["_selected_action"] = [outsider.pk]
    else:
        page, confirm = url(User, "delete", outsider.pk), {"post": "yes"}
        shown = client.get(page)

    assert shown.status_code == 200
    assert "permission" not in shown.content.decode()
    assert str(profile) in shown.content.decode()  # listed as deleted with the user
    assert client.post(page, confirm).status_code == 302
    assert not User.objects.filter(pk=outsider.pk).exists()
    assert not BillingProfile.objects.filter(pk=profile.pk).exists()


def test_a_user_nothing_names_is_still_deleted(staff, outsider):
    response = client_for(staff).post(url(User, "delete", outsider.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not User.objects.filter(pk=outsider.pk).exists()


@pytest.mark.parametrize("renamed", ["Bob", "BOB", "\uff22\uff4f\uff42"])  # Ｂｏｂ
def test_a_user_is_not_renamed_to_another_users_name_in_another_case(staff, renamed):
    """The add form refuses "Bob" beside "bob"; the change form saved it: two accounts that
    logged in apart and shared one count of failed logins (`pantheon.throttling`)."""
    User.objects.create_user("bob", password="bob-pass-12345")
    erin = User.objects.create_user("erin", password="erin-pass-12345")
    client = client_for(staff)
    page = url(User, "change", erin.pk)
    form = opened(client, page, "user_form")

    refused = client.post(page, form | {"username": renamed})
    added = client.post(
        url(User, "add"),
        {"username": renamed, "password1": "x-pass-12345", "password2": "x-pass-12345"},
    )

    said = "A user with that username already exists."
    assert refused.status_code == added.status_code == 200
    assert refused.context["adminform"].form.errors["username"] == [said]
    assert added.context["adminform"].form.errors["username"] == [said]
    assert User.objects.get(pk=erin.pk).username == "erin"
    assert client.post(page, form | {"username": "Erin"}).status_code == 302  # its own name
    assert User.objects.get(pk=erin.pk).username == "Erin"


def test_unticking_a_users_active_ends_their_running_turns(staff, owner, make_agent, make_session):
    """Deactivated, a user's token is refused (401), their own cancel too, while their turn
    went on calling provider after provider, billed. It ends as their cancel would have."""
    from sessions_app.models import Turn

    session = make_session(owner, agent=make_agent(owner, "ada"))
    running = Turn.objects.create(
        session=session, turn_index=1, mode="direct", status="running", user_input="go"
    )
    client = client_for(staff)
    page = url(User, "change", owner.pk)
    form = opened(client, page, "user_form")
    form.pop("is_active", None)  # unticked

    answer = client.post(page, form, follow=True)

    assert answer.status_code == 200
    assert "Ended 1 running turn of theirs." in answer.content.decode()
    running.refresh_from_db()
    assert (running.status, running.failure_code) == ("interrupted", "turn_cancelled")
    assert User.objects.get(pk=owner.pk).is_active is False


def test_unticking_a_users_active_revokes_their_api_token(staff, owner):
    """Kept, the token worked again the day the account was ticked Active again: a copy that
    leaked meanwhile (the reason an account is closed, often) opened it."""
    Token.objects.create(user=owner)
    client = client_for(staff)
    page = url(User, "change", owner.pk)
    form = opened(client, page, "user_form")
    form.pop("is_active", None)  # unticked

    assert client.post(page, form).status_code == 302

    assert not Token.objects.filter(user=owner).exists()
    entries = LogEntry.objects.filter(object_id=str(owner.pk)).order_by("pk")
    assert [(entry.user_id, entry.get_change_message()) for entry in entries] == [
        (staff.pk, "Revoked the API token (the account was deactivated)."),
        (staff.pk, "Changed Active: True → False."),
    ]


def test_a_users_credits_this_month_open_the_dashboard_on_this_month(staff, owner, monkeypatch):
    """The link opened the dashboard's default 30 days: another total than the one beside it."""
    # One moment for the page and the check: midnight passing between them made them differ.
    now = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: now)
    page = client_for(staff).get(url(User, "change", owner.pk)).content.decode()

    first = now.date().replace(day=1)
    assert f"?user=owner&amp;start={first}&amp;end={now.date()}" in page


def test_a_rooms_name_and_goal_are_held_to_the_apis_limits(staff, chat, settings):
    """A 2,500-character goal saved here, where PATCH rooms/{id} refuses it."""
    room = chat["room"]
    form = {
        "name": "Research",
        "goal": "g" * (settings.PANTHEON_MAX_ROOM_GOAL_CHARS + 1),
        "current_mode": room.current_mode,
        "seats-TOTAL_FORMS": "0",
        "seats-INITIAL_FORMS": "0",
    }
    client = client_for(staff)

    too_long = client.post(url(Room, "change", room.pk), form)
    blank_name = client.post(url(Room, "change", room.pk), {**form, "name": "   ", "goal": ""})
    fine = client.post(url(Room, "change", room.pk), {**form, "goal": "Ship v1."})

    assert too_long.status_code == blank_name.status_code == 200
    limit = settings.PANTHEON_MAX_ROOM_GOAL_CHARS
    assert f"Ensure this field has no more than {limit} characters." in too_long.content.decode()
    assert "This field is required." in blank_name.content.decode()
    assert fine.status_code == 302
    room.refresh_from_db()
    assert room.goal == "Ship v1."


def test_api_tokens_are_never_shown_and_are_revoked_from_the_users_list(staff, owner):
    """DRF's token pages showed each key: in its list, and as the name of its own page."""
    token = Token.objects.create(user=owner)
    client = client_for(staff)

    user_page = client.get(url(User, "change", owner.pk)).content.decode()
    revoked = client.post(
        url(User, "changelist"),
        {"action": "revoke_api_tokens", "_selected_action": [owner.pk]},
        follow=True,
    )

    assert "since " in user_page and token.key not in user_page
    assert client.get("/admin/authtoken/tokenproxy/").status_code == 404
    assert "Revoked the API token of 1 user." in revoked.content.decode()
    assert token.key not in revoked.content.decode()
    assert not Token.objects.filter(user=owner).exists()
    assert LogEntry.objects.get(object_id=str(owner.pk)).change_message == (
        "Revoked the API token."
    )


def test_records_name_their_session_and_turn_readably(staff, chat):
    """Lists and titles read "Session f7099fb9-…(36 characters)" and "Turn 4 of <a UUID>"."""
    session = chat["session"]
    Session.objects.filter(pk=session.pk).update(
        title="", created_at=datetime(2026, 12, 3, 9, 5, tzinfo=UTC)
    )
    session.refresh_from_db()
    client = client_for(staff)

    messages = client.get(url(Message, "changelist")).content.decode()
    turn = client.get(url(Turn, "change", chat["rows"][Turn].pk)).content.decode()

    short = str(session.pk)[:8]
    assert f"Session of 2026-12-03 09:05 UTC · {short}…" in messages
    assert str(session.pk) not in messages.split('id="result_list"')[1].split("</table>")[0]
    assert f"Turn 1 of session {short}… (completed)" in turn
    Session.objects.filter(pk=session.pk).update(title="Planning")
    session.refresh_from_db()
    assert str(session) == f"Session “Planning” · {short}…"


def test_the_ledger_search_finds_an_agent_key_typed_in_capitals(staff, chat):
    """Agent keys are lower case; "ADA" found nothing where "ada" found @ada's calls."""
    response = client_for(staff).get(url(LlmCallEvent, "changelist"), {"q": "ADA"})

    assert list(response.context["cl"].result_list) == [chat["rows"][LlmCallEvent]]


@pytest.mark.parametrize("typed", ["@ada", "＠ada", "@ADA"])
def test_the_ledger_search_finds_an_agent_key_typed_as_pages_name_it(staff, chat, typed):
    """ "Ada (@ada)", as a turn's roster and the seats name an agent: "@ada" pasted from there
    found nothing (read as a provider's request id)."""
    response = client_for(staff).get(url(LlmCallEvent, "changelist"), {"q": typed})

    assert list(response.context["cl"].result_list) == [chat["rows"][LlmCallEvent]]


def test_context_audits_list_when_and_figures_as_the_ledger_does(staff, chat):
    audit = chat["rows"][TurnContextAudit]
    TurnContextAudit.objects.filter(pk=audit.pk).update(model_context_limit=131072)

    page = client_for(staff).get(url(TurnContextAudit, "changelist")).content.decode()

    assert "131,072" in page and "131072" not in page
    assert f"{audit.created_at:%Y-%m-%d %H:%M:%S}" in page


def test_an_agent_seated_in_a_deleted_room_can_still_be_deleted(staff, chat):
    """Its seat in the deleted room was refused as "permission to delete … room agent", where
    the API's DELETE agents/{id} takes the seat with it."""
    room = chat["room"]
    Room.objects.filter(pk=room.pk).update(deleted_at=timezone.now())
    agent = Agent.objects.get(agent_key="ada")

    page = client_for(staff).get(url(Agent, "delete", agent.pk)).content.decode()
    response = client_for(staff).post(url(Agent, "delete", agent.pk), {"post": "yes"})

    assert "permission" not in page
    assert response.status_code == 302
    assert not Agent.objects.filter(pk=agent.pk).exists()
    assert not RoomAgent.objects.filter(room=room).exists()


def test_a_nul_address_asks_an_anonymous_visitor_to_log_in_first(staff):
    from django.test import Client

    anonymous = Client().get(url(Turn, "changelist"), {"status__exact": "\x00"})
    refused = client_for(staff).get(url(Turn, "changelist"), {"status__exact": "\x00"})

    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    assert refused.status_code == 400
    assert "no-cache" in refused["Cache-Control"]  # never_cache, as every console page


def test_a_session_in_a_deleted_room_is_read_only_and_says_why(staff, chat):
    """Its title stayed editable, though the API answers 404 for it as for its room."""
    session = chat["session"]
    Room.objects.filter(pk=chat["room"].pk).update(
        deleted_at=datetime(2026, 12, 4, 8, 0, 5, tzinfo=UTC)
    )
    client = client_for(staff)

    page = client.get(url(Session, "change", session.pk)).content.decode()
    renamed = client.post(url(Session, "change", session.pk), {"title": "Renamed"})

    assert 'name="title"' not in page
    assert "Its room was deleted on 2026-12-04 08:00:05 UTC" in page
    # Refused: the page again, read-only, saying why (not Django's bare 403).
    assert renamed.status_code == 302 and renamed.url == url(Session, "change", session.pk)
    session.refresh_from_db()
    assert session.title != "Renamed"


def test_an_analyst_cannot_revoke_api_tokens(make_operator, owner):
    token = Token.objects.create(user=owner)
    client = client_for(make_operator("Analyst"))

    listed = client.get(url(User, "changelist")).content.decode()
    posted = client.post(
        url(User, "changelist"), {"action": "revoke_api_tokens", "_selected_action": [owner.pk]}
    )

    assert "revoke_api_tokens" not in listed
    assert posted.status_code in (200, 302, 403)
    assert Token.objects.filter(pk=token.pk).exists()


# --- sorting ------------------------------------------------------------------------------------


def _sorted_by(client, model, column: str) -> list:
    """The list's rows sorted by the column headed `column`, as its header link sorts them."""
    cl = client.get(url(model, "changelist")).context["cl"]  # its columns, the checkbox too
    headers = [str(label_for_field(name, model, cl.model_admin)) for name in cl.list_display]
    sorted_ = client.get(url(model, "changelist"), {"o": headers.index(column)})
    return list(sorted_.context["cl"].result_list)


def test_user_owner_and_room_columns_sort_by_the_name_they_show(staff, make_agent, make_room):
    """They sorted by the row's key: zed, created first, came before amy."""
    zed, amy = (User.objects.create_user(name) for name in ("zed", "amy"))
    for user in (zed, amy):
        LlmCallEvent.objects.create(user=user, purpose="agent", model_alias="deepseek")
        make_agent(user, "ada")
    zeta, alpha = (make_room(user, name=name) for user, name in ((zed, "Zeta"), (amy, "Alpha")))
    for room in (zeta, alpha):
        Session.objects.create(started_by=room.owner, room=room)
    client = client_for(staff)

    assert [e.user for e in _sorted_by(client, LlmCallEvent, "user")] == [amy, zed]
    assert [a.owner for a in _sorted_by(client, Agent, "owner")] == [amy, zed]
    assert [s.room for s in _sorted_by(client, Session, "room")] == [alpha, zeta]
    assert [r.owner for r in _sorted_by(client, Room, "owner")] == [amy, zed]


def test_the_sessions_agent_column_sorts_by_the_agents_name(staff, owner, make_agent):
    """It sorted by the agent's row (its creation): Zed, created first, came before Ada."""
    zed, ada = make_agent(owner, "zed"), make_agent(owner, "ada")
    for agent in (zed, ada):
        Session.objects.create(started_by=owner, agent=agent)

    sessions = _sorted_by(client_for(staff), Session, "agent")

    assert [session.agent for session in sessions] == [ada, zed]


def test_a_user_and_a_session_page_lead_to_their_records(staff, owner, outsider, chat):
    """Auditors copied ids into the other lists' search boxes: a user's page had no way to
    their sessions, turns or ledger rows, nor a session's page to its turns and messages."""
    client = client_for(staff)
    other = Session.objects.create(started_by=outsider, title="Not theirs")
    turn, event = chat["rows"][Turn], chat["rows"][LlmCallEvent]

    for page, expected in [
        (url(User, "change", owner.pk), [chat["session"], turn, event]),
        (
            url(Session, "change", chat["session"].pk),
            [turn, chat["rows"][Message], event, *(chat["rows"][m] for m in RECORDS[2:4])],
        ),
    ]:
        html = client.get(page).content.decode()
        links = re.findall(r'<a href="(/admin/[^"]+/\?[^"]+)">', html.split("records")[-1])
        assert len(links) == len(expected), links
        for link, row in zip(links, expected, strict=True):
            listed = client.get(link.replace("&amp;", "&"))
            assert listed.status_code == 200
            assert url(type(row), "change", row.pk) in listed.content.decode()
            assert url(Session, "change", other.pk) not in listed.content.decode()


def test_a_turn_page_links_the_summary_it_made(staff, chat, make_session, owner):
    """A turn's context audit says "summary triggered"; its page now leads to that summary."""
    client = client_for(staff)
    turn, summary = chat["rows"][Turn], chat["rows"][SessionSummary]
    html = client.get(url(Turn, "change", turn.pk)).content.decode()
    assert f'<a href="{url(SessionSummary, "change", summary.pk)}">{summary}</a>' in html

    quiet = Turn.objects.create(
        session=make_session(owner), turn_index=1, mode="direct", status="completed"
    )
    html = client.get(url(Turn, "change", quiet.pk)).content.decode()
    assert "summary it made" in html.lower()
    assert url(SessionSummary, "change", summary.pk) not in html


@pytest.mark.django_db
def test_a_login_whose_next_leads_off_site_lands_on_the_consoles_index(make_operator):
    """Django refuses a `next` on another site and falls back to LOGIN_REDIRECT_URL, which was
    its default, /accounts/profile/: a 404 right after a good login."""
    make_operator("Owner", "boss")
    client = Client()

    response = client.post(
        "/admin/login/",
        {"username": "boss", "password": "operator-pass-123", "next": "https://evil.example/"},
    )

    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert client.get(response["Location"]).status_code == 200


# --- the console's 403 ----------------------------------------------------------------------------


def test_a_refused_page_says_what_the_role_may_not_do_and_leads_back(make_operator, chat):
    """An Analyst on a room's add page got Django's bare "403 Forbidden": no console, no word
    of why, no way back."""
    analyst = client_for(make_operator("Analyst", "anna"))

    refused = analyst.get(url(Room, "add"))

    page = refused.content.decode()
    assert refused.status_code == 403
    assert "<title>Not allowed | Pantheon</title>" in page
    assert "You may not add rooms." in page
    assert "<strong>Analyst</strong>: sees everything, the billing dashboard and its export" in page
    assert f'<a href="{url(Room, "changelist")}" class="button">Back to the rooms</a>' in page
    assert f'<a href="{reverse("admin:index")}">Console home</a>' in page
    # A record: nobody changes it, and the page says so.
    turn = chat["rows"][Turn]
    owner = client_for(make_operator("Owner", "olga"))
    record = owner.post(url(Turn, "change", turn.pk), {"status": "failed"}).content.decode()
    assert "You may not change turns." in record
    assert "Records (turns, messages, summaries, context audits, the ledger) are what" in record


def test_the_console_403_served_as_asgi_serves_it_gives_its_connection_back(make_operator):
    """Under ASGI Django renders a 403 on a thread of its own, not the request's: the page's
    reads (the operator's roles, the console's apps) took a connection there that nothing gave
    back (to the servers' pool: a place lost with every refusal), dropped unclosed."""
    logged_in = Client()
    logged_in.force_login(make_operator("Analyst", "anna"))

    async def refused() -> int:
        client = AsyncClient()
        client.cookies = logged_in.cookies
        return (await client.get(url(Room, "add"))).status_code

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert async_to_sync(refused)() == 403
        gc.collect()

    dropped = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not [message for message in dropped if "Connection" in message], dropped


def test_an_api_403_stays_json():
    refused = permission_denied(RequestFactory().get("/api/v1/sessions"), PermissionDenied())

    assert refused.status_code == 403
    assert refused["Content-Type"] == "application/json"


# --- record pages and list counts read as the lists write figures ---------------------------------


def test_a_turn_page_writes_its_figures_as_the_lists_do_and_its_roster_readably(staff, chat):
    """Its figures read "Input tokens: 15501" where the lists write 15,501; the roster was the
    snapshot's JSON, ids and whole role prompts in one run of text; the routing its JSON."""
    turn = chat["rows"][Turn]
    prompt = "Research analyst: finds facts, sources and numbers, and says where each came from."
    Turn.objects.filter(pk=turn.pk).update(
        turn_index=1024,
        input_tokens=15501,
        output_tokens=892,
        mode="orchestrator",
        roster=[
            {
                "name": "Ada",
                "agent_id": "59e819e7-006b-45f5-8d81-264e4e159181",
                "agent_key": "ada",
                "model_alias": "deepseek",
                "role_prompt": prompt,
            }
        ],
        routing={
            "fallback_used": True,
            "manager_model_alias": "deepseek",
            "selected_agent_keys": ["ada"],
        },
    )

    page = client_for(staff).get(url(Turn, "change", turn.pk)).content.decode()

    assert '<div class="readonly">15,501</div>' in page
    assert '<div class="readonly">892</div>' in page
    assert '<div class="readonly">1024</div>' in page  # an index, as the list's "#"
    assert "<td>Ada (@ada)</td><td>deepseek</td>" in page
    # Its headers head their columns for a screen reader (a read-only field's table has no
    # other way to say which cell is the alias and which the prompt).
    roster = re.search(r'<table class="pantheon-roster">.*?</thead>', page, re.S)
    assert roster and re.findall(r"<th scope=\"col\">([^<]*)</th>", roster.group(0)) == [
        "agent",
        "model alias",
        "role prompt",
    ]
    assert f"<summary>{prompt[:59]}…</summary>{prompt}</details>" in page
    assert "role_prompt" not in page and "59e819e7" not in page
    assert "deepseek chose @ada (fallback: its answer could not be used" in page

    # A failed call is said so (it read "its answer could not be used", with no answer), and
    # the keys the manager named that no seat had are named.
    Turn.objects.filter(pk=turn.pk).update(
        routing={
            "fallback_used": True,
            "fallback_reason": "manager_failed",
            "manager_model_alias": "deepseek",
            "selected_agent_keys": ["ada"],
            "ignored_agent_keys": ["zed"],
        }
    )
    page = client_for(staff).get(url(Turn, "change", turn.pk)).content.decode()
    assert (
        "deepseek chose @ada (fallback: its call failed, so the first agent answered); it also "
        "named @zed, left out" in page
    )


@pytest.fixture
def a_thousand_turns(owner, make_session):
    session = make_session(owner)
    Turn.objects.bulk_create(
        Turn(session=session, turn_index=index, status="completed", user_input="hi")
        for index in range(1, 1002)
    )


def test_a_lists_count_is_thousands_separated_and_shows_all_only_when_narrowed(
    staff, a_thousand_turns
):
    """The list said "303603 results (Show all)" unfiltered, its link back to the same page."""
    client = client_for(staff)

    listed = client.get(url(Turn, "changelist")).content.decode()
    narrowed = client.get(url(Turn, "changelist"), {"status__exact": "completed"}).content
    searched = client.get(url(Turn, "changelist"), {"q": "nobody"}).content.decode()

    assert '<span class="small quiet">1,001 results</span>' in listed
    assert "Show all" not in listed.split('id="changelist-search"')[1].split("</form>")[0]
    assert "1,001 turns" in listed
    assert '1,001 results (<a href="?">Show all</a>)' in narrowed.decode()
    assert '0 results (<a href="?">Show all</a>)' in searched
