"""What an operator may read in the console never reaches a secret: API tokens, passwords."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for
from rooms.models import Agent

pytestmark = pytest.mark.django_db

User = get_user_model()


@pytest.mark.parametrize("role", ["Analyst", "Owner"])
@pytest.mark.parametrize(
    "lookup",
    ["auth_token__key__startswith", "auth_token__key__gt", "auth_token__startswith", "auth_token"],
)
def test_the_users_list_cannot_be_filtered_by_api_token(make_operator, owner, role, lookup):
    """Django takes a filter on a related row's primary key for a local column's, and a
    token's primary key is its key: `?auth_token__key__startswith=` answered which users'
    tokens start so, and an operator who may only view users read any token (a superuser's
    included) in at most 640 requests, one hex digit at a time."""
    token = Token.objects.create(user=owner)
    client = client_for(make_operator(role, username=f"{role.lower()}-operator"))

    response = client.get(url(User, "changelist"), {lookup: token.key[:1]})

    assert response.status_code == 400
    assert owner.get_username() not in response.content.decode()


@pytest.mark.parametrize(
    ("model", "to_field"),
    [(User, "auth_token"), (User, "agents"), (User, "billing_profile"), (Agent, "seats")],
)
def test_a_to_field_naming_a_relation_from_another_model_is_a_400(staff, model, to_field):
    """Django's own check read `primary_key` of the relation, which it lacks: a 500."""
    response = client_for(staff).get(url(model, "changelist"), {"_to_field": to_field})

    assert response.status_code == 400


def test_a_to_field_naming_a_column_still_works_as_djangos(staff):
    client = client_for(staff)

    assert client.get(url(User, "changelist"), {"_to_field": "id"}).status_code == 200
    assert client.get(url(User, "changelist"), {"_to_field": "password"}).status_code == 400


def test_a_users_delete_pages_say_they_hold_an_api_token_without_its_key(staff, owner, outsider):
    """Django's list of what the delete takes named the user's token by its key ("Token:
    29bcc17c..."), on the user's delete page and on the bulk action's, where the token's own
    pages, which name it so, are gone (`pantheon.admin`)."""
    tokens = [Token.objects.create(user=owner), Token.objects.create(user=outsider)]
    client = client_for(staff)

    single = client.get(url(User, "delete", owner.pk))
    bulk = client.post(
        url(User, "changelist"),
        {"action": "delete_selected", "_selected_action": [owner.pk, outsider.pk]},
    )

    assert single.status_code == bulk.status_code == 200
    for page, shown in [(single, 1), (bulk, 2)]:
        text = page.content.decode()
        assert not any(token.key in text for token in tokens)
        assert text.count("Token: (its key is not shown)") == shown
    deleted = client.post(url(User, "delete", owner.pk), {"post": "yes"})
    assert deleted.status_code == 302
    assert list(Token.objects.values_list("user", flat=True)) == [outsider.pk]
