"""What most session tests start from: the owner's agent ada, seated in the room "Lab"."""

import pytest


@pytest.fixture
def ada(owner, make_agent):
    return make_agent(owner, "ada")


@pytest.fixture
def room(owner, ada, make_room):
    return make_room(owner, agents=[ada], name="Lab")
