"""A user's history says what a change on their page changed from and to, as every other
console page's does: a role or superuser status granted is what an audit of it looks for."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from pantheon.testing.admin import client_for, history, opened

pytestmark = pytest.mark.django_db


def test_a_role_and_superuser_status_granted_are_logged_with_their_values(staff, outsider):
    """It read "Changed Superuser status and Groups.", the same for a grant and its undoing."""
    client = client_for(staff)
    page = f"/admin/auth/user/{outsider.pk}/change/"
    analyst, owner = Group.objects.get(name="Analyst"), Group.objects.get(name="Owner")
    outsider.groups.add(analyst)

    form = opened(client, page, "user_form")
    form.pop("user_permissions", None)  # none chosen: a browser sends nothing for the box
    form.update(is_superuser=["on"], groups=[str(analyst.pk), str(owner.pk)])
    granted = client.post(page, form)
    form = opened(client, page, "user_form")
    form.pop("user_permissions", None)
    form.pop("is_superuser")
    form["groups"] = [str(analyst.pk)]
    client.post(page, form)

    assert granted.status_code == 302
    assert history(outsider) == [
        "Changed Superuser status: False → True and Groups: Analyst → Analyst, Owner.",
        "Changed Superuser status: True → False and Groups: Analyst, Owner → Analyst.",
    ]


def test_a_user_added_is_logged_without_what_was_typed(staff):
    """An addition's fields include the passwords typed: its entry stays Django's own."""
    client = client_for(staff)

    client.post(
        "/admin/auth/user/add/",
        {
            "username": "newbie",
            "usable_password": "true",
            "password1": "a-secret-pass-789",
            "password2": "a-secret-pass-789",
        },
    )

    [entry] = history(get_user_model().objects.get(username="newbie"))
    assert "a-secret-pass-789" not in entry
    assert entry == "Added."
