"""A session's page open while its title changes elsewhere (the API, another tab): saved as
shown, it keeps the new title and writes nothing; a title typed over it is refused, nothing
saved, the page saying what it is now."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pantheon.testing.admin import admin_url, client_for, opened, refusals
from sessions_app.models import Session

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(owner, make_room):
    return Session.objects.create(room=make_room(owner), started_by=owner, title="First")


def test_a_session_page_saved_as_shown_keeps_a_title_the_api_gave_it(session, staff):
    page = admin_url(Session, "change", session.pk)
    console = client_for(staff)
    shown = opened(console, page, "session_form")
    Session.objects.filter(pk=session.pk).update(title="Renamed by its user")

    with CaptureQueriesContext(connection) as queries:
        saved = console.post(page, shown)

    assert saved.status_code == 302
    assert not [q for q in queries if q["sql"].startswith('UPDATE "sessions_app_session"')]
    assert Session.objects.get(pk=session.pk).title == "Renamed by its user"


def test_a_title_changed_since_the_page_opened_is_not_overwritten(session, staff):
    page = admin_url(Session, "change", session.pk)
    console = client_for(staff)
    shown = opened(console, page, "session_form")
    Session.objects.filter(pk=session.pk).update(title="Renamed by its user")

    refused = console.post(page, shown | {"title": "Renamed by an operator"})

    assert refused.status_code == 200
    assert refusals(refused) == [
        "Title was changed elsewhere since this page was opened: nothing was saved. It is now "
        "“Renamed by its user”, as shown below: make your change to it again if it still holds."
    ]
    assert Session.objects.get(pk=session.pk).title == "Renamed by its user"
