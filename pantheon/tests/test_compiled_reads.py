"""The hot reads' SQL is compiled once per process (`pantheon.compiled`), and each call still
reads the rows as they are now, with its own values."""

from uuid import UUID

import pytest
from django.db import connection
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from pantheon.authentication import _TOKEN_WITH_USER
from pantheon.compiled import CompiledRead
from rooms.models import Agent
from usage.models import BillingProfile

pytestmark = pytest.mark.django_db


def test_a_token_is_read_with_its_user_and_profile_in_one_query_compiled_once(
    owner, outsider, compilations
):
    BillingProfile.objects.create(user=owner, monthly_credit_cap=100)
    mine, _ = Token.objects.get_or_create(user=owner)
    theirs, _ = Token.objects.get_or_create(user=outsider)
    client = APIClient()
    compilations.clear()
    for token in (mine, theirs, mine, theirs):
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        assert client.get("/api/v1/usage").status_code == 200
    # Compiled twice on its first call in the process (`CompiledRead._compile`), if at all.
    assert len([sql for sql in compilations if 'FROM "authtoken_token"' in sql]) <= 2

    with CaptureQueriesContext(connection) as queries:
        token = _TOKEN_WITH_USER.get(key=mine.key)
        assert token.user.username == owner.username
        assert token.user.billing_profile.monthly_credit_cap == 100
    assert len(queries) == 1
    with pytest.raises(BillingProfile.DoesNotExist):
        _TOKEN_WITH_USER.get(key=theirs.key).user.billing_profile  # noqa: B018
    with pytest.raises(Token.DoesNotExist):
        _TOKEN_WITH_USER.get(key="0" * 40)

    owner.is_active = False
    owner.save(update_fields=["is_active"])
    client.credentials(HTTP_AUTHORIZATION=f"Token {mine.key}")
    assert client.get("/api/v1/usage").status_code == 401


def test_each_call_reads_the_rows_as_they_are_now_with_its_values(owner, outsider):
    def agents(owner_id: int, key: str):
        return Agent.objects.select_related("owner").filter(owner_id=owner_id, agent_key=key)

    read = CompiledRead(agents, owner_id=int, key=str)
    ada = Agent.objects.create(owner=owner, agent_key="ada", name="Ada")
    Agent.objects.create(owner=outsider, agent_key="ada", name="Other Ada")
    assert read.get(owner_id=owner.pk, key="ada").name == "Ada"
    assert read.get(owner_id=outsider.pk, key="ada").owner.username == outsider.username
    ada.name = "Ada L."
    ada.save(update_fields=["name"])
    found = read.get(owner_id=str(owner.pk), key="ada")  # converted to the parameter's type
    assert (found.name, found.pk, found.owner.pk) == ("Ada L.", ada.pk, owner.pk)
    with pytest.raises(Agent.DoesNotExist):
        read.get(owner_id=owner.pk, key="grace")
    assert read.all(owner_id=owner.pk, key="grace") == []
    with pytest.raises(TypeError):
        read.get(owner_id=owner.pk)


def test_annotations_and_json_fields_come_converted(owner):
    def with_clock(agent_id: UUID):
        return Agent.objects.annotate(read_at=Now()).filter(pk=agent_id)

    agent = Agent.objects.create(
        owner=owner, agent_key="ada", name="Ada", tool_permissions=["search", {"max": 2}]
    )
    found = CompiledRead(with_clock, agent_id=UUID).get(agent_id=str(agent.pk))
    assert (found.pk, found.tool_permissions) == (agent.pk, ["search", {"max": 2}])
    assert abs((found.read_at - timezone.now()).total_seconds()) < 60


def test_a_queryset_with_a_value_of_its_own_that_changes_is_refused(owner):
    def created_before_now(owner_id: int):
        return Agent.objects.filter(owner_id=owner_id, created_at__lt=timezone.now())

    with pytest.raises(ValueError, match="a value of its own"):
        CompiledRead(created_before_now, owner_id=int).all(owner_id=owner.pk)

    def ignoring(owner_id: int):
        return Agent.objects.all()

    with pytest.raises(ValueError, match="not in the queryset"):
        CompiledRead(ignoring, owner_id=int).all(owner_id=owner.pk)


def test_a_read_of_values_gives_dictionaries(owner, outsider):
    def keys(owner_id: int):
        return Agent.objects.filter(owner_id=owner_id).order_by("agent_key").values("agent_key")

    for key in ("grace", "ada"):
        Agent.objects.create(owner=owner, agent_key=key, name=key.title())
    read = CompiledRead(keys, owner_id=int)
    assert read.values(owner_id=owner.pk) == [{"agent_key": "ada"}, {"agent_key": "grace"}]
    assert read.values(owner_id=outsider.pk) == []
    with pytest.raises(TypeError):
        read.all(owner_id=owner.pk)
