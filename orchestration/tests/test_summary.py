import json
import logging

from orchestration.budget import estimate_tokens
from orchestration.context import CUT_MARK
from orchestration.summary import (
    TRANSCRIPT_HEADING,
    build_summary_messages,
    fit_summary_messages,
    parse_summary,
)
from orchestration.types import ConversationSummary, HistoryMessage

VALID = {
    "summary": "The team chose Postgres.",
    "key_facts": ["Postgres 16 is available"],
    "decisions": ["Use Postgres"],
    "open_questions": ["Shard later?"],
    "action_items": ["Bob writes the migration"],
}


def test_valid_answer_fills_every_field():
    extraction = parse_summary(json.dumps(VALID))
    assert extraction.valid_json is True
    assert extraction.summary == "The team chose Postgres."
    assert extraction.key_facts == ("Postgres 16 is available",)
    assert extraction.decisions == ("Use Postgres",)
    assert extraction.open_questions == ("Shard later?",)
    assert extraction.action_items == ("Bob writes the migration",)


def test_fenced_answer_is_valid():
    extraction = parse_summary("```json\n" + json.dumps(VALID) + "\n```")
    assert extraction.valid_json is True
    assert extraction.decisions == ("Use Postgres",)


def test_invalid_json_keeps_the_text_with_empty_lists(caplog):
    raw = "  The team chose Postgres and will shard later.  "
    with caplog.at_level(logging.WARNING, logger="orchestration.summary"):
        extraction = parse_summary(raw)
    assert extraction.valid_json is False
    assert extraction.summary == raw.strip()
    assert extraction.key_facts == extraction.decisions == ()
    assert extraction.open_questions == extraction.action_items == ()
    assert "not a JSON object" in caplog.text
    # The answer sums up the user's conversation: a production log gets its length alone.
    assert "Postgres" not in caplog.text
    assert f"an answer of {len(raw)} characters" in caplog.text


def test_unusable_summary_text_is_not_logged(caplog):
    answer = dict(VALID, summary=["The patient's diagnosis"])
    with caplog.at_level(logging.INFO, logger="orchestration.summary"):
        extraction = parse_summary(json.dumps(answer))
    assert extraction.summary == ""
    assert "no usable summary text (list)" in caplog.text
    assert "diagnosis" not in caplog.text


def test_invalid_json_fallback_text_is_truncated():
    extraction = parse_summary("word " * 2000)
    assert len(extraction.summary) == 4000


def test_missing_list_keys_default_to_empty_with_a_warning_naming_them(caplog):
    answer = {"summary": "Short.", "decisions": ["Use Postgres"]}
    with caplog.at_level(logging.WARNING, logger="orchestration.summary"):
        extraction = parse_summary(json.dumps(answer))
    assert extraction.valid_json is True
    assert extraction.decisions == ("Use Postgres",)
    assert extraction.key_facts == extraction.open_questions == extraction.action_items == ()
    warning = caplog.text
    for key in ("key_facts", "open_questions", "action_items"):
        assert key in warning
    assert "'decisions'" not in warning


def test_missing_summary_becomes_empty_with_a_warning(caplog):
    answer = {key: [] for key in ("key_facts", "decisions", "open_questions", "action_items")}
    with caplog.at_level(logging.WARNING, logger="orchestration.summary"):
        extraction = parse_summary(json.dumps(answer))
    assert extraction.summary == ""
    assert extraction.valid_json is True
    assert "summary" in caplog.text


def test_items_are_coerced_or_filtered():
    answer = dict(VALID, key_facts=["ok", 42, None, {"x": 1}, "  ", True], decisions="Use UUIDs")
    extraction = parse_summary(json.dumps(answer))
    assert extraction.key_facts == ("ok", "42")
    assert extraction.decisions == ("Use UUIDs",)


def test_non_list_field_is_ignored(caplog):
    with caplog.at_level(logging.WARNING, logger="orchestration.summary"):
        extraction = parse_summary(json.dumps(dict(VALID, action_items={"a": 1})))
    assert extraction.action_items == ()
    assert "action_items" in caplog.text


def test_summary_prompt_demands_the_contract_and_lists_the_transcript():
    transcript = [
        HistoryMessage(role="user", content="Which database?"),
        HistoryMessage(role="assistant", content="Postgres.", agent_key="bob", agent_name="Bob"),
    ]
    system, user = build_summary_messages(
        previous_summary=ConversationSummary("Earlier: hello."), transcript=transcript
    )
    for key in ("summary", "key_facts", "decisions", "open_questions", "action_items"):
        assert f'"{key}"' in system.content
    assert "strict JSON" in system.content
    assert "Earlier: hello." in user.content
    after_heading = user.content.split(TRANSCRIPT_HEADING, 1)[1]
    assert after_heading.strip().splitlines() == [
        "[user]: Which database?",
        "[Bob @bob]: Postgres.",
    ]


def test_the_summarizer_is_asked_to_carry_the_previous_lists_forward():
    previous = ConversationSummary(
        "We chose Postgres.",
        key_facts=("Budget is 5k",),
        decisions=("Use Postgres",),
        action_items=("Alice buys\nserver",),
    )
    transcript = [HistoryMessage(role="user", content="Alice bought it.")]

    system, user = build_summary_messages(previous_summary=previous, transcript=transcript)

    assert "carry them forward" in system.content
    assert user.content.split(TRANSCRIPT_HEADING)[0] == (
        "Previous summary:\n"
        "We chose Postgres.\n"
        "Key facts:\n"
        "- Budget is 5k\n"
        "Decisions:\n"
        "- Use Postgres\n"
        "Action items:\n"
        "- Alice buys server\n\n"
    )


def test_summary_prompt_without_previous_summary():
    _, user = build_summary_messages(previous_summary=None, transcript=[])
    assert "(none)" in user.content


def prompt_tokens(messages) -> int:
    return sum(estimate_tokens(message.content) for message in messages)


def transcript_lines(messages) -> list[str]:
    return messages[1].content.split(TRANSCRIPT_HEADING, 1)[1].strip().splitlines()


def test_a_transcript_that_fits_is_folded_in_whole():
    transcript = [
        HistoryMessage(role="user", content="Which database?"),
        HistoryMessage(role="assistant", content="Postgres.", agent_key="bob", agent_name="Bob"),
    ]
    prompt = fit_summary_messages(
        previous_summary=ConversationSummary("Hello."), transcript=transcript, limit=2000
    )
    assert prompt is not None
    assert prompt.messages == build_summary_messages(
        previous_summary=ConversationSummary("Hello."), transcript=transcript
    )
    assert prompt.transcript_used == 2
    assert prompt.estimated_tokens == prompt_tokens(prompt.messages)


def test_the_oldest_messages_that_fit_are_folded_in_and_the_rest_left_for_later():
    transcript = [
        HistoryMessage(role="user", content=f"m{index} " + "x" * 320) for index in range(10)
    ]
    bare = prompt_tokens(build_summary_messages(previous_summary=None, transcript=[]))

    prompt = fit_summary_messages(previous_summary=None, transcript=transcript, limit=bare + 350)

    assert prompt is not None
    assert prompt.transcript_used == 3  # 103 tokens each, with its line
    assert [line[:11] for line in transcript_lines(prompt.messages)] == [
        "[user]: m0 ",
        "[user]: m1 ",
        "[user]: m2 ",
    ]
    assert prompt.estimated_tokens == prompt_tokens(prompt.messages) <= bare + 350


def line_tokens(transcript) -> int:
    """What these messages add to a summary prompt, counted apart (as the fit counts them)."""
    lines = transcript_lines(build_summary_messages(previous_summary=None, transcript=transcript))
    return sum(estimate_tokens("\n" + line) for line in lines)


def test_a_summary_folds_in_whole_exchanges():
    """Room for the first exchange and the next question, not its answer: the question waits
    with its answer, which would otherwise come first in the raw history after the summary."""
    transcript = [
        HistoryMessage(role="user", content=("Which database? " * 10).strip()),
        HistoryMessage(role="assistant", content="Postgres.", agent_key="bob", agent_name="Bob"),
        HistoryMessage(role="user", content=("Which keys? " * 10).strip()),
        HistoryMessage(role="assistant", content="UUIDs, " * 200, agent_key="bob"),
    ]
    bare = prompt_tokens(build_summary_messages(previous_summary=None, transcript=[]))

    prompt = fit_summary_messages(
        previous_summary=None, transcript=transcript, limit=bare + line_tokens(transcript[:3])
    )

    assert prompt is not None
    assert prompt.transcript_used == 2
    assert transcript_lines(prompt.messages)[1] == "[Bob @bob]: Postgres."


def test_a_first_exchange_too_long_to_fold_in_whole_is_folded_in_part():
    """Then the answers left out come first in the raw history (a prompt leaves them out) and
    first in the next summary's transcript, which folds them in ahead of the next question."""
    answers = [
        HistoryMessage(role="assistant", content=f"Answer {index}. " + "x" * 300, agent_key="bob")
        for index in range(3)
    ]
    transcript = [HistoryMessage(role="user", content="Which database?"), *answers]
    bare = prompt_tokens(build_summary_messages(previous_summary=None, transcript=[]))

    prompt = fit_summary_messages(
        previous_summary=None, transcript=transcript, limit=bare + line_tokens(transcript[:2])
    )
    assert prompt is not None and prompt.transcript_used == 2

    later = [*answers[1:], HistoryMessage(role="user", content="And then?"), answers[0]]
    previous = ConversationSummary("They chose Postgres.")
    with_previous = prompt_tokens(build_summary_messages(previous_summary=previous, transcript=[]))
    prompt = fit_summary_messages(
        previous_summary=previous, transcript=later, limit=with_previous + line_tokens(later[:3])
    )
    assert prompt is not None and prompt.transcript_used == 2


def test_a_first_message_larger_than_the_limit_is_cut_to_it():
    transcript = [
        HistoryMessage(role="user", content="Kick-off. " + "word " * 3000),
        HistoryMessage(role="user", content="Next."),
    ]
    prompt = fit_summary_messages(previous_summary=None, transcript=transcript, limit=1000)
    assert prompt is not None
    assert prompt.transcript_used == 1
    [line] = transcript_lines(prompt.messages)
    assert line.startswith("[user]: Kick-off. word word") and line.endswith(CUT_MARK)
    assert 990 < prompt_tokens(prompt.messages) <= 1000


def test_a_previous_summary_that_leaves_no_room_is_cut_to_half_of_it():
    transcript = [HistoryMessage(role="user", content="word " * 3000)]
    instructions = prompt_tokens(build_summary_messages(previous_summary=None, transcript=[]))
    prompt = fit_summary_messages(
        previous_summary=ConversationSummary("The team chose Postgres. " * 400),
        transcript=transcript,
        limit=1000,
    )
    assert prompt is not None
    request = prompt.messages[1].content
    previous = request.split(TRANSCRIPT_HEADING)[0]
    assert previous.startswith("Previous summary:\nThe team chose Postgres.")
    assert CUT_MARK in previous and CUT_MARK in transcript_lines(prompt.messages)[0]
    # Each got about half of what the instructions leave.
    room = 1000 - instructions
    assert abs(estimate_tokens(previous) - room / 2) < 20
    assert prompt_tokens(prompt.messages) <= 1000


def test_no_summary_prompt_without_a_transcript_or_room_for_one():
    transcript = [HistoryMessage(role="user", content="Which database?")]
    instructions = prompt_tokens(build_summary_messages(previous_summary=None, transcript=[]))
    assert (
        fit_summary_messages(previous_summary=ConversationSummary("Hi."), transcript=[], limit=2000)
        is None
    )
    assert (
        fit_summary_messages(previous_summary=None, transcript=transcript, limit=instructions + 10)
        is None
    )


def test_a_transcript_read_short_of_a_questions_answers_does_not_fold_the_question_in():
    """The read of the transcript stopped after a question whose answer came next: folding the
    question in left the answer first in the raw history, where no prompt shows it."""
    transcript = [
        HistoryMessage(role="user", content="q1"),
        HistoryMessage(role="assistant", content="a1", agent_key="ada"),
        HistoryMessage(role="user", content="q2"),
    ]

    short = fit_summary_messages(
        previous_summary=None, transcript=transcript, limit=100_000, next_role="assistant"
    )
    whole = fit_summary_messages(
        previous_summary=None, transcript=transcript, limit=100_000, next_role="user"
    )
    complete = fit_summary_messages(previous_summary=None, transcript=transcript, limit=100_000)

    assert short is not None and short.transcript_used == 2
    assert whole is not None and whole.transcript_used == 3
    assert complete is not None and complete.transcript_used == 3
