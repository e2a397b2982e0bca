"""A room's or an agent's page open in two tabs (or while the API or a turn changes the row):
a save writes only what the operator changed on that page, and keeps what was changed
elsewhere since the page was opened. A field changed on both sides is refused, nothing saved,
the page saying what it is now. Saved whole, the stale tab put back the values it showed
("Changed Name: TwoTabs renamed by A → TwoTabs and Current mode: roundtable → manual")."""

import threading

import pytest
from django.db import connection, transaction

from pantheon.testing.admin import (
    admin_url,
    client_for,
    elsewhere,
    history,
    opened,
    post_and_updates,
    posted_back,
    refusals,
    two_tabs,
)
from rooms.models import Agent, Room

pytestmark = pytest.mark.django_db

RENAMED_ELSEWHERE = elsewhere("Name", "“TwoTabs renamed by A”")


@pytest.fixture
def room(owner, make_agent, make_room):
    return make_room(
        owner, [make_agent(owner, "ada")], name="TwoTabs", mode="roundtable", goal="Find out."
    )


def test_a_stale_tab_keeps_the_name_another_tab_saved(room, staff):
    page = admin_url(Room, "change", room.pk)
    (tab_a, shown_a), (tab_b, shown_b) = two_tabs(staff, page, "room_form")

    renamed = tab_a.post(page, shown_a | {"name": "TwoTabs renamed by A"})
    moded = tab_b.post(page, shown_b | {"current_mode": "manual"})

    assert (renamed.status_code, moded.status_code) == (302, 302)
    room.refresh_from_db()
    assert (room.name, room.current_mode) == ("TwoTabs renamed by A", "manual")
    assert history(room) == [
        "Changed Name: TwoTabs → TwoTabs renamed by A.",
        "Changed Current mode: Roundtable → Manual (tag agents with @key).",
    ]


def test_a_modes_change_is_logged_and_refused_by_its_label(room, staff):
    """A room's history read "Changed Pending mode: (empty) → roundtable.", the column's value,
    where the page's select shows "Roundtable" (and a relation's change names its row)."""
    page = admin_url(Room, "change", room.pk)
    (tab_a, shown_a), (tab_b, shown_b) = two_tabs(staff, page, "room_form")

    tab_a.post(page, shown_a | {"pending_mode": "orchestrator"})
    refused = tab_b.post(page, shown_b | {"pending_mode": "manual"})

    assert history(room) == ["Changed Pending mode: (empty) → Orchestrator."]
    assert refusals(refused) == [elsewhere("Pending mode", "“Orchestrator”")]


def test_a_name_changed_in_both_tabs_is_refused_saying_what_it_is_now(room, staff):
    page = admin_url(Room, "change", room.pk)
    (tab_a, shown_a), (tab_b, shown_b) = two_tabs(staff, page, "room_form")
    tab_a.post(page, shown_a | {"name": "TwoTabs renamed by A"})

    refused = tab_b.post(page, shown_b | {"name": "TwoTabs renamed by B", "goal": "Find more."})

    assert refused.status_code == 200
    assert refusals(refused) == [RENAMED_ELSEWHERE]
    room.refresh_from_db()
    assert (room.name, room.goal) == ("TwoTabs renamed by A", "Find out.")
    assert len(history(room)) == 1
    # The refused page shows the name as it is now (and compares the next save with it); the
    # goal typed, which was not refused, stays as typed.
    shown_again = posted_back(refused.content.decode(), "room_form")
    assert shown_again["name"] == shown_again["initial-name"] == ["TwoTabs renamed by A"]
    assert shown_again["goal"] == ["Find more."]

    saved = tab_b.post(page, shown_again | {"name": "TwoTabs renamed by B"})

    assert saved.status_code == 302
    room.refresh_from_db()
    assert (room.name, room.goal) == ("TwoTabs renamed by B", "Find more.")
    assert history(room)[-1] == (
        "Changed Name: TwoTabs renamed by A → TwoTabs renamed by B and Goal: Find out. → "
        "Find more.."
    )


def test_a_page_saved_as_shown_after_an_api_rename_keeps_the_new_name_and_writes_nothing(
    room, staff
):
    page = admin_url(Room, "change", room.pk)
    console = client_for(staff)
    shown = opened(console, page, "room_form")
    Room.objects.filter(pk=room.pk).update(name="Renamed by the API")
    room.refresh_from_db()

    saved, updates = post_and_updates(console, page, shown, "rooms_room")

    assert saved.status_code == 302
    assert not updates
    after = Room.objects.get(pk=room.pk)
    assert (after.name, after.updated_at) == ("Renamed by the API", room.updated_at)


def test_the_same_change_made_in_both_tabs_is_no_conflict(room, staff):
    page = admin_url(Room, "change", room.pk)
    (tab_a, shown_a), (tab_b, shown_b) = two_tabs(staff, page, "room_form")
    tab_a.post(page, shown_a | {"pending_mode": "manual"})

    saved = tab_b.post(page, shown_b | {"pending_mode": "manual", "name": "Renamed by B"})

    assert saved.status_code == 302
    room.refresh_from_db()
    assert (room.name, room.pending_mode) == ("Renamed by B", "manual")
    assert history(room)[-1] == "Changed Name: TwoTabs → Renamed by B."


# --- agents -------------------------------------------------------------------------------------


@pytest.fixture
def agent(owner, make_agent):
    return make_agent(owner, "ada", role_prompt="One.\nTwo.")


def test_a_stale_agent_tab_keeps_what_another_tab_saved(agent, staff):
    page = admin_url(Agent, "change", agent.pk)
    (tab_a, shown_a), (tab_b, shown_b) = two_tabs(staff, page, "agent_form")

    tab_a.post(page, shown_a | {"name": "Ada Lovelace", "model_alias": "qwen"})
    saved = tab_b.post(page, shown_b | {"role_prompt": "One.\r\nTwo.\r\nThree."})

    assert saved.status_code == 302
    agent.refresh_from_db()
    assert (agent.name, agent.model_alias) == ("Ada Lovelace", "qwen")
    # Kept with its lines ended as the API's clients end them.
    assert agent.role_prompt == "One.\nTwo.\nThree."
    assert history(agent)[-1] == "Changed Role prompt: One.\nTwo. → One.\nTwo.\nThree.."


def test_an_alias_changed_in_both_agent_tabs_is_refused(agent, staff):
    page = admin_url(Agent, "change", agent.pk)
    (tab_a, shown_a), (tab_b, shown_b) = two_tabs(staff, page, "agent_form")
    tab_a.post(page, shown_a | {"model_alias": "qwen"})

    refused = tab_b.post(page, shown_b | {"model_alias": "premium", "name": "Ada B"})

    assert refused.status_code == 200
    assert refusals(refused) == [
        "Model alias was changed elsewhere since this page was opened: nothing was saved. It "
        "is now “qwen”, as shown below: make your change to it again if it still holds."
    ]
    agent.refresh_from_db()
    assert (agent.name, agent.model_alias) == ("Ada", "qwen")


@pytest.mark.parametrize("role_prompt", ["One.\nTwo.", "", "One line."])
def test_an_agent_page_saved_as_it_is_writes_nothing(agent, staff, role_prompt):
    """Saved unchanged, the page wrote the agent again and moved its `updated_at`; a role
    prompt of several lines came back with CR LF and was written so, as a change."""
    Agent.objects.filter(pk=agent.pk).update(role_prompt=role_prompt)
    agent.refresh_from_db()
    page = admin_url(Agent, "change", agent.pk)
    console = client_for(staff)
    shown = opened(console, page, "agent_form")

    saved, updates = post_and_updates(console, page, shown, "rooms_agent")

    assert saved.status_code == 302
    assert not updates
    after = Agent.objects.get(pk=agent.pk)
    assert (after.role_prompt, after.updated_at) == (role_prompt, agent.updated_at)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_page_saved_while_a_rename_commits_elsewhere_sees_it(room, staff):
    """The page read the room before the rename elsewhere committed, found its name as shown,
    waited for the rename's lock to write its own, and wrote over it: no refusal, and the
    history said "TwoTabs → Renamed by B". It reads the room once the rename has committed."""
    page = admin_url(Room, "change", room.pk)
    console = client_for(staff)
    shown = opened(console, page, "room_form")
    answers = []

    def save_the_page():
        try:
            answers.append(console.post(page, shown | {"name": "Renamed by B"}))
        finally:
            connection.close()

    saving = threading.Thread(target=save_the_page)
    with transaction.atomic():  # the API's rename, committing as the page is saved
        Room.objects.filter(pk=room.pk).update(name="TwoTabs renamed by A")
        saving.start()
        saving.join(timeout=1)
        assert saving.is_alive()  # waiting for the rename
    saving.join(timeout=30)

    [answer] = answers
    assert answer.status_code == 200
    assert refusals(answer) == [RENAMED_ELSEWHERE]
    assert Room.objects.get(pk=room.pk).name == "TwoTabs renamed by A"
