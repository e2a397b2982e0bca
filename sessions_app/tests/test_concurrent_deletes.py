"""A direct session opened while its agent is being deleted: 404, no session pointing at no
agent (see rooms/tests/test_concurrent_deletes.py for the rooms' side)."""

import pytest

from pantheon.exceptions import Gone
from rooms.models import Agent
from sessions_app.models import Session
from sessions_app.services import session_create_direct

pytestmark = pytest.mark.django_db


def test_a_direct_session_with_an_agent_deleted_meanwhile_is_gone(owner, make_agent):
    agent = make_agent(owner, "ada")
    Agent.objects.filter(pk=agent.pk).delete()

    with pytest.raises(Gone):
        session_create_direct(agent=agent, user=owner)

    assert not Session.objects.exists()
