"""A console page links only pages its reader may open: the user page linked a support
operator (who may view and change users, nothing else) to the user's sessions, turns and ledger
rows and to the billing dashboard, a ledger row's page its turn, session and user, a session's
page its agent and its records' lists, each a 403 when followed."""

import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for
from rooms.models import Agent
from sessions_app.models import Session, Turn
from usage.models import LlmCallEvent, MonthlyUsage

pytestmark = pytest.mark.django_db

User = get_user_model()


@pytest.fixture
def ledger(owner, make_agent, make_session, this_month):
    session = make_session(owner, agent=make_agent(owner, "ada"), title="Weekly plan")
    turn = Turn.objects.create(session=session, turn_index=1, mode="manual", user_input="hi")
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
    usage = MonthlyUsage.objects.create(user=owner, month=this_month.date(), credits=1)
    return {"session": session, "turn": turn, "event": event, "usage": usage}


def links(client, page: str) -> set[str]:
    """The console pages `page` links to (its own page and static files aside)."""
    response = client.get(page)
    assert response.status_code == 200, response.status_code
    found = set(re.findall(r'href="(/admin/[^"#?]*)', response.content.decode()))
    return found - {page}


def refused(client, pages: set[str]) -> list[str]:
    return sorted(page for page in pages if client.get(page).status_code == 403)


@pytest.mark.parametrize(
    ("codenames", "page"),
    [
        # support: a customer's page
        (("view_user", "change_user"), lambda rows: url(User, "change", rows["event"].user_id)),
        # a ledger reader: a row's page (its turn, session, user)
        (("view_llmcallevent",), lambda rows: url(LlmCallEvent, "change", rows["event"].pk)),
        # a sessions reader: a session's page (its agent, its records' lists)
        (("view_session",), lambda rows: url(Session, "change", rows["session"].pk)),
        # who reads the monthly counters: the list (the dashboard's month)
        (("view_monthlyusage",), lambda rows: url(MonthlyUsage, "changelist")),
        # who reads turns: a turn's page (its session)
        (("view_turn",), lambda rows: url(Turn, "change", rows["turn"].pk)),
    ],
    ids=["support", "ledger", "sessions", "monthly-counters", "turns"],
)
def test_no_page_links_a_page_its_reader_may_not_open(ledger, operator, codenames, page):
    client = client_for(operator(*codenames))

    linked = links(client, page(ledger))

    assert linked  # home, the list: what they may open stays linked
    assert refused(client, linked) == []


def test_who_may_open_them_still_has_the_links(ledger, make_operator):
    client = client_for(make_operator("Analyst"))
    event = ledger["event"]

    user_page = links(client, url(User, "change", event.user_id))
    row_page = links(client, url(LlmCallEvent, "change", event.pk))
    session_page = links(client, url(Session, "change", ledger["session"].pk))

    assert {url(Session, "changelist"), url(LlmCallEvent, "changelist")} <= user_page
    assert reverse("admin:billing") in user_page
    assert {url(Turn, "change", ledger["turn"].pk), url(User, "change", event.user_id)} <= row_page
    assert url(Agent, "change", ledger["session"].agent_id) in session_page
    assert refused(client, user_page | row_page | session_page) == []
