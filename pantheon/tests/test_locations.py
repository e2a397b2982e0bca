"""A 201's `Location` (`pantheon.locations.location`): Django's `reverse` of the route, which
for a UUID is built from the route's path reversed once."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse, set_script_prefix

from pantheon.locations import location

IDS = [
    uuid.UUID("9567610d-7433-4cd2-839d-0dd8a632af33"),
    uuid.UUID("ABCDEF01-2345-4789-8BCD-EF0123456789"),
    uuid.UUID(int=0),
]


@pytest.mark.parametrize("view_name", ["turn-detail", "session-detail", "agent-detail"])
@pytest.mark.parametrize("pk", IDS, ids=str)
def test_a_uuids_location_is_reverses_path(view_name, pk):
    assert location(view_name, pk) == {"Location": reverse(view_name, kwargs={"pk": pk})}
    assert location(view_name, pk)["Location"].endswith(f"/{str(pk).lower()}")


def test_the_script_prefix_a_request_is_served_under_is_kept():
    """A server mounted under a prefix (FORCE_SCRIPT_NAME, ASGI's root_path) answers paths
    under it: a path remembered for one prefix is not another's."""
    pk = uuid.uuid4()
    plain = location("turn-detail", pk)["Location"]
    try:
        set_script_prefix("/chat/")
        mounted = location("turn-detail", pk)["Location"]
        assert mounted == reverse("turn-detail", kwargs={"pk": pk})
    finally:
        set_script_prefix("/")
    assert (plain, mounted) == (f"/api/v1/turns/{pk}", f"/chat/api/v1/turns/{pk}")
    assert location("turn-detail", pk)["Location"] == plain


def test_an_id_that_is_no_uuid_is_reversed_as_before():
    assert location("turn-detail", str(IDS[0])) == {"Location": f"/api/v1/turns/{IDS[0]}"}
