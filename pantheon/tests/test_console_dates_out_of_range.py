"""Dates at the calendar's ends typed into a console list's address: the list refuses them as
any filter it cannot apply (back to the list, flagged invalid) or shows what they select, never
a 500. Django's date lookups fail lazily there (the year 0 of `__year`, a UTC offset that
carries 0001-01-01 or 9999-12-31 past the calendar), when the page's query is compiled."""

import pytest
from django.contrib.auth import get_user_model

from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for
from rooms.models import Room
from sessions_app.models import Session, Turn
from usage.models import LlmCallEvent, ModelAlias, PricingVersion


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [
        {"created_at__lt": "0001-01-01"},
        {"created_at__gte": "0001-01-01T00:00:00+01:00"},
        {"created_at__lt": "9999-12-31T23:59:59-01:00"},
        {"created_at__gte": "0001-01-01T00:30:00+01:00", "created_at__lt": "9999-12-31"},
    ],
)
def test_the_ledger_list_takes_a_window_at_the_calendars_ends(staff, query):
    response = client_for(staff).get(url(LlmCallEvent, "changelist"), query)

    assert response.status_code in (200, 302)
    if response.status_code == 302:
        assert response["Location"].endswith("?e=1")


@pytest.mark.django_db
def test_a_window_from_the_calendars_first_day_still_lists_the_ledger(staff, owner):
    """A window PostgreSQL can hold selects what it covers: the list is shown, not refused."""
    response = client_for(staff).get(
        url(LlmCallEvent, "changelist"), {"created_at__gte": "0001-01-01T00:00:00+01:00"}
    )

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("model", "lookup"),
    [
        (Turn, "created_at__year"),
        (Session, "created_at__year"),
        (PricingVersion, "effective_from__year"),
        (get_user_model(), "date_joined__year"),
        (Room, "created_at__year"),
        (ModelAlias, "updated_at__year"),
    ],
)
@pytest.mark.parametrize("year", ["0", "99999"])
def test_a_year_no_calendar_holds_is_an_invalid_filter_on_every_list(staff, model, lookup, year):
    response = client_for(staff).get(url(model, "changelist"), {lookup: year})

    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


@pytest.mark.django_db
def test_the_list_it_redirects_to_says_the_filter_was_not_applied(staff):
    console = client_for(staff)

    response = console.get(url(Turn, "changelist"), {"created_at__year": "0"}, follow=True)

    assert response.redirect_chain == [(url(Turn, "changelist") + "?e=1", 302)]
    assert "could not be filtered as the address asked" in response.content.decode()


@pytest.mark.django_db
def test_a_year_the_calendar_holds_still_filters(staff, owner):
    this_year = owner.date_joined.year

    within = client_for(staff).get(
        url(get_user_model(), "changelist"), {"date_joined__year": this_year}
    )
    before = client_for(staff).get(
        url(get_user_model(), "changelist"), {"date_joined__year": this_year - 1}
    )

    assert owner in within.context["cl"].result_list
    assert list(before.context["cl"].result_list) == []
