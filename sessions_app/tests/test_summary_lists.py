"""A summary's lists (key facts, decisions, open questions, action items) reach the agents and
the next summary.

The summarizer was given the previous summary's text alone, so the lists of one summary were
lost at the next (the demo provider's included: `GET sessions/{id}/summary` came back with
none of them), and the agents' system prompts held the summary's text alone."""

import json

import pytest

from conftest import FakeGateway

pytestmark = pytest.mark.django_db

FIRST_SUMMARY = {
    "summary": "We chose Postgres.",
    "key_facts": ["Budget is 5k"],
    "decisions": ["Use Postgres"],
    "open_questions": ["Which region?"],
    "action_items": ["Alice buys server"],
}


@pytest.fixture
def summarized_twice(owner_client, owner, ada, make_session, fake_gateway: FakeGateway, post_turn):
    """16 turns of a direct session with Ada: the summary of turn 8 answers FIRST_SUMMARY,
    that of turn 16 the gateway's default."""
    second_summary = fake_gateway.summary_reply
    fake_gateway.summary_reply = json.dumps(FIRST_SUMMARY)
    session = make_session(owner, agent=ada)
    for index in range(1, 17):
        if index == 9:
            fake_gateway.summary_reply = second_summary
        response = post_turn(owner_client, session, f"question {index}")
        assert response.status_code == 201, response.json()
    assert len(fake_gateway.calls_for("summary")) == 2
    return session


def test_the_summarizer_is_given_the_previous_summarys_lists(summarized_twice, fake_gateway):
    """The second summary's prompt held `Previous summary:\\nWe chose Postgres.` and nothing of
    the lists."""
    _, request = fake_gateway.calls_for("summary")[1].messages

    previous = request.content.split("Previous summary:\n", 1)[1].split("\n\nTranscript", 1)[0]
    assert previous == "\n".join(
        [
            "We chose Postgres.",
            "Key facts:",
            "- Budget is 5k",
            "Decisions:",
            "- Use Postgres",
            "Open questions:",
            "- Which region?",
            "Action items:",
            "- Alice buys server",
        ]
    )
    instructions = fake_gateway.calls_for("summary")[1].messages[0].content
    assert "carry them forward" in instructions


def test_agents_are_given_the_summarys_lists(summarized_twice, fake_gateway):
    """Ada's system prompt after the first summary held `Summary of the conversation so far:\\n
    We chose Postgres.` and nothing of its lists."""
    system = fake_gateway.calls_for("agent")[8].messages[0].content  # turn 9's

    assert system.endswith(
        "Summary of the conversation so far:\n"
        "We chose Postgres.\n"
        "Key facts: Budget is 5k\n"
        "Decisions: Use Postgres\n"
        "Open questions: Which region?\n"
        "Action items: Alice buys server"
    )


def test_the_demo_summarizer_carries_the_lists_forward(
    owner_client, owner, ada, make_session, post_turn
):
    """With the demo provider, a decision of the first eight turns was gone from the session's
    summary after the sixteenth: the second summary knew only turns 8 to 15."""
    session = make_session(owner, agent=ada)
    messages = {
        1: "We decided to use Postgres.",
        2: "Please order the server.",
        3: "Which region should we pick?",
        9: "We agreed on Frankfurt.",
    }

    for index in range(1, 17):
        response = post_turn(owner_client, session, messages.get(index, f"Note number {index}"))
        assert response.status_code == 201, response.json()

    summary = owner_client.get(f"/api/v1/sessions/{session.id}/summary").json()
    assert summary["from_sequence"] > 2 * 7  # the second summary's
    assert "We decided to use Postgres." in summary["decisions"]
    assert "We agreed on Frankfurt." in summary["decisions"]
    assert "Please order the server." in summary["action_items"]
    assert "Which region should we pick?" in summary["open_questions"]


def test_a_summary_answered_in_prose_keeps_the_previous_lists(
    owner_client, owner, ada, make_session, fake_gateway: FakeGateway, post_turn
):
    """The second summarizer answered prose, not JSON: its text is kept (DESIGN), and the lists
    it was given to carry forward were emptied, the agents' "Decisions:" line gone with them."""
    fake_gateway.summary_reply = json.dumps(FIRST_SUMMARY)
    session = make_session(owner, agent=ada)
    for index in range(1, 18):
        if index == 9:
            fake_gateway.summary_reply = "We still use Postgres, in one region."
        assert post_turn(owner_client, session, f"question {index}").status_code == 201

    summary = owner_client.get(f"/api/v1/sessions/{session.pk}/summary").json()
    assert summary["summary_text"] == "We still use Postgres, in one region."
    assert (summary["decisions"], summary["action_items"]) == (
        ["Use Postgres"],
        ["Alice buys server"],
    )
    system = fake_gateway.calls_for("agent")[-1].messages[0].content
    assert "We still use Postgres, in one region.\nKey facts: Budget is 5k" in system
    assert "Decisions: Use Postgres" in system


def test_a_summary_that_leaves_a_list_out_keeps_it_and_an_empty_one_empties_it(
    owner_client, owner, ada, make_session, fake_gateway: FakeGateway, post_turn
):
    """A JSON answer without some of the lists emptied them, as one in prose did."""
    fake_gateway.summary_reply = json.dumps(FIRST_SUMMARY)
    session = make_session(owner, agent=ada)
    for index in range(1, 18):
        if index == 9:
            fake_gateway.summary_reply = json.dumps(
                {"summary": "Postgres it is.", "open_questions": []}
            )
        assert post_turn(owner_client, session, f"question {index}").status_code == 201

    summary = owner_client.get(f"/api/v1/sessions/{session.pk}/summary").json()
    assert summary["summary_text"] == "Postgres it is."
    assert summary["open_questions"] == []
    assert (summary["key_facts"], summary["decisions"], summary["action_items"]) == (
        ["Budget is 5k"],
        ["Use Postgres"],
        ["Alice buys server"],
    )
