"""The billing dashboard's days are written as 2026-11-01 and nothing else (11/01/2026 was read
as November 1, whoever typed it), and a day so written that no calendar holds is said to be no
such day, not to be badly written."""

import pytest
from django.urls import reverse

from pantheon.testing.admin import client_for
from usage.tests.dashboard import DASHBOARD, EXPORT

pytestmark = pytest.mark.django_db


def errors_of(response) -> list[str]:
    return [error for errors in response.context["form"].errors.values() for error in errors]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        (
            {"start": "2026-02-30", "end": "2026-03-05"},
            "The first day, 2026-02-30, is no such day.",
        ),
        ({"end": "2026-13-01"}, "The last day, 2026-13-01, is no such day."),
        (
            {"start": "2025-02-29", "end": "2025-03-01"},
            "The first day, 2025-02-29, is no such day.",
        ),
    ],
)
def test_a_day_the_calendar_lacks_is_said_to_be_no_such_day(make_operator, query, error):
    client = client_for(make_operator("Analyst"))

    response = client.get(reverse(DASHBOARD), query)

    assert response.status_code == 400
    assert errors_of(response) == [error]
    assert error in response.content.decode()
    assert client.get(reverse(EXPORT), query).status_code == 400


@pytest.mark.parametrize(
    "written",
    # The last three as the commands' --since refuses them (pantheon.days): 2026-1-1 was taken.
    [
        "11/01/2026",
        "11/01/26",
        "Nov 1 2026",
        "1 November 2026",
        "2026-1-1",
        "20261101",
        "2026-W49-1",
    ],
)
def test_a_day_written_otherwise_is_refused_not_guessed(make_operator, written):
    client = client_for(make_operator("Analyst"))

    response = client.get(reverse(DASHBOARD), {"start": written, "end": "2026-11-20"})

    assert response.status_code == 400
    assert errors_of(response) == ["The first day must be a day written as 2026-11-01."]
    assert client.get(reverse(EXPORT), {"start": written}).status_code == 400


def test_a_plus_sign_before_a_day_is_refused(make_operator):
    """A plus sign is `%2B` in an address. A bare `+` there is a space (form encoding), which the
    form trims as every console field does: `start=+2026-11-01` is the day 2026-11-01."""
    client = client_for(make_operator("Analyst"))

    signed = client.get(reverse(DASHBOARD) + "?start=%2B2026-11-01&end=2026-11-20")
    spaced = client.get(reverse(DASHBOARD) + "?start=+2026-11-01&end=2026-11-20")

    assert signed.status_code == 400
    assert errors_of(signed) == ["The first day must be a day written as 2026-11-01."]
    assert spaced.status_code == 200
    assert str(spaced.context["form"].cleaned_data["start"]) == "2026-11-01"


def test_a_day_written_as_the_date_input_sends_it_is_taken(make_operator):
    response = client_for(make_operator("Analyst")).get(
        reverse(DASHBOARD), {"start": "2026-11-01", "end": "2026-11-20"}
    )

    assert response.status_code == 200
    data = response.context["form"].cleaned_data
    assert (str(data["start"]), str(data["end"])) == ("2026-11-01", "2026-11-20")
