"""A running turn has not ended: the console's turn page said "Ended by: ran to its end" of it,
and the turns list's "ran to its end" filter listed it (its failure code is empty, as that of a
turn that ran to its end, until it ends)."""

import pytest

from pantheon.testing.admin import admin_url, client_for
from sessions_app.models import Turn, TurnFailure, TurnStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def turns(owner, make_agent, make_session):
    session = make_session(owner, agent=make_agent(owner, "ada"))

    def turn(index: int, status: str, failure: str = "") -> Turn:
        return Turn.objects.create(
            session=session,
            turn_index=index,
            mode="direct",
            user_input="hi",
            status=status,
            failure_code=failure,
        )

    return {
        "running": turn(1, TurnStatus.RUNNING),
        "completed": turn(2, TurnStatus.COMPLETED),
        "failed": turn(3, TurnStatus.FAILED),  # every agent failed: it still ran to its end
        "interrupted": turn(4, TurnStatus.INTERRUPTED, TurnFailure.INTERRUPTED),
    }


def ended_by_on_the_page(client, turn: Turn) -> str:
    page = client.get(admin_url(Turn, "change", turn.pk))
    assert page.status_code == 200
    html = page.content.decode()
    row = html[html.index('class="form-row field-failure_code') :]
    return row[row.index('<div class="readonly">') + len('<div class="readonly">') :].split(
        "</div>"
    )[0]


def test_a_running_turns_page_says_it_is_still_running(staff, turns):
    client = client_for(staff)

    assert ended_by_on_the_page(client, turns["running"]) == "still running"
    assert ended_by_on_the_page(client, turns["completed"]) == "ran to its end"
    assert ended_by_on_the_page(client, turns["failed"]) == "ran to its end"
    assert ended_by_on_the_page(client, turns["interrupted"]) == (
        "interrupted: its server stopped, or it stalled"
    )
    # The field keeps its label and its help text.
    page = client.get(admin_url(Turn, "change", turns["running"].pk)).content.decode()
    assert "Ended by:" in page
    assert "the code its stream's turn_failed event carries" in page


def test_ran_to_its_end_lists_no_running_turn(staff, turns):
    client = client_for(staff)

    listed = client.get(admin_url(Turn, "changelist"), {"failure_code__exact": ""})

    assert listed.status_code == 200
    assert {turn.pk for turn in listed.context["cl"].result_list} == {
        turns["completed"].pk,
        turns["failed"].pk,
    }
    # The other choices, and the status filter beside it, list what they did.
    interrupted = client.get(
        admin_url(Turn, "changelist"), {"failure_code__exact": TurnFailure.INTERRUPTED}
    )
    assert [turn.pk for turn in interrupted.context["cl"].result_list] == [turns["interrupted"].pk]
    running = client.get(admin_url(Turn, "changelist"), {"status__exact": "running"})
    assert [turn.pk for turn in running.context["cl"].result_list] == [turns["running"].pk]
    everything = client.get(admin_url(Turn, "changelist"))
    assert len(everything.context["cl"].result_list) == 4
