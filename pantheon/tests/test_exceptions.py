"""The one handler renders each refusal as `{"detail": {"code", "message", ...}}`."""

from pantheon.exceptions import NoValidTaggedAgents, TooManyFollows, api_exception_handler


def render(exc):
    response = api_exception_handler(exc, {})
    return response.status_code, response.data


def test_no_valid_tagged_agents_says_which_keys_are_valid():
    status, body = render(NoValidTaggedAgents(valid_agent_keys=["ada", "grace"]))

    assert status == 422
    assert body == {
        "detail": {
            "code": "no_valid_tagged_agents",
            "message": "Manual mode needs at least one @agent_key of an agent seated in the "
            "room. Valid: @ada, @grace.",
            "valid_agent_keys": ["ada", "grace"],
        }
    }


def test_no_valid_tagged_agents_without_keys_keeps_the_plain_message():
    status, body = render(NoValidTaggedAgents())

    assert status == 422
    assert body["detail"] == {
        "code": "no_valid_tagged_agents",
        "message": "Manual mode needs at least one @agent_key of an agent seated in the room.",
        "valid_agent_keys": [],
    }


def test_no_valid_tagged_agents_keeps_a_message_of_its_own():
    _, body = render(NoValidTaggedAgents("Tag someone.", valid_agent_keys=("ada",)))

    assert body["detail"]["message"] == "Tag someone."
    assert body["detail"]["valid_agent_keys"] == ["ada"]


def test_a_follow_limit_of_one_says_one_stream():
    """It said "You already hold 1 streams of turns' events…" (the browser client's catch)."""
    _, body = render(TooManyFollows(1))
    assert body["detail"]["message"].startswith(
        "You already hold 1 stream of turns' events open on this server, the most one user may"
    )
    assert "hold 2 streams of" in render(TooManyFollows(2))[1]["detail"]["message"]
