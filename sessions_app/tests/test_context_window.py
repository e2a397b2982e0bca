"""A prompt and the answer a call asks for fit the alias's window together.

Every call asks the provider for the alias's whole max_output_tokens (`max_tokens`). The context
budget kept only a fifth of the window for it: a prompt filled up to the budget and the answer
asked for overran the window, and a real provider refused the call (context_length_exceeded).
"""

import pytest

from orchestration.budget import estimate_tokens
from orchestration.context import CUT_MARK
from sessions_app.models import Message, SessionSummary, Turn, TurnContextAudit
from usage.models import LlmCallEvent, ModelAlias
from usage.services import model_alias_set

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada_session(owner, make_agent, make_room, make_session, settings):
    """Ada, on deepseek, alone in a room. Summaries are off (their alias is disabled): only
    pruning keeps her prompt in the budget."""
    ModelAlias.objects.filter(alias="qwen").update(enabled=False)
    settings.PANTHEON_SUMMARIZER_MODEL_ALIAS = "qwen"
    return make_session(owner, room=make_room(owner, [make_agent(owner, "ada")]))


def assert_each_fits_its_window(requests: list[dict], window: int) -> None:
    for request in requests:
        prompt = sum(estimate_tokens(message["content"]) for message in request["messages"])
        assert prompt + request["max_tokens"] <= window, (prompt, request["max_tokens"])


def assert_nothing_written() -> None:
    assert (Turn.objects.count(), Message.objects.count(), LlmCallEvent.objects.count()) == (
        0,
        0,
        0,
    )


@pytest.fixture
def long_answers():
    """An 8,192-token window answering up to 4,096: valid, its prompt keeps 3,072 tokens. With
    a fifth of the window kept for the answer (1,638), it kept 5,530."""
    model_alias_set(alias="deepseek", context_window=8192, max_output_tokens=4096)


def test_history_is_pruned_to_leave_the_window_room_for_the_answer(
    owner_client, ada_session, post_turn, provider_requests, long_answers
):
    """Pruning kept the prompt under 90 % of the old budget (4,977): the fourth one, about
    4,230 tokens, whole, was sent with max_tokens 4,096 to a window of 8,192."""
    for label in ("FIRST", "SECOND", "THIRD", "FOURTH"):
        response = post_turn(owner_client, ada_session, f"@ada {label} " + "word " * 640)
        assert response.status_code == 201, response.json()

    assert [request["max_tokens"] for request in provider_requests] == [4096] * 4
    assert_each_fits_its_window(provider_requests, 8192)
    audit = TurnContextAudit.objects.get(turn__turn_index=4)
    assert (audit.model_context_limit, audit.input_budget) == (8192, 3072)
    assert audit.pruned is True and audit.estimated_tokens_before > 2560
    assert audit.estimated_tokens_after <= 0.9 * 3072
    assert "FIRST" not in str(provider_requests[-1]["messages"])


def test_a_message_that_leaves_no_room_for_the_answer_is_refused_unsent(
    owner_client, ada_session, post_turn, provider_requests, long_answers
):
    """About 4,800 tokens of prompt fit the old budget (5,530): sent with max_tokens 4,096 to
    a window of 8,192."""
    response = post_turn(owner_client, ada_session, "@ada " + "word " * 3000)

    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "context_budget_exceeded"
    assert "deepseek has an input budget of 3072" in response.json()["detail"]["message"]
    assert provider_requests == []
    assert_nothing_written()


def test_a_saved_alias_whose_answer_fills_its_window_refuses_turns_unsent(
    owner_client, ada_session, post_turn, provider_requests
):
    """A row saved before the rule (2,500 tokens, answers up to 2,000) cannot hold a prompt
    beside the answer: its turns are refused, as any too small budget's, not sent to overrun
    the window. Before, a fifth of the window stood for the answer and they were sent."""
    ModelAlias.objects.filter(alias="deepseek").update(context_window=2500, max_output_tokens=2000)

    response = post_turn(owner_client, ada_session, "@ada hi")

    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "context_budget_exceeded"
    assert "deepseek has an input budget of 0" in response.json()["detail"]["message"]
    assert provider_requests == []
    assert_nothing_written()


def test_the_largest_window_postgresql_holds_runs_a_turn(
    owner_client, ada_session, post_turn, provider_requests
):
    """2,147,483,647 (int4's largest) with answers of 2,000,000,000: accepted, and its figures
    fit the audit's columns."""
    model_alias_set(alias="deepseek", context_window=2_147_483_647, max_output_tokens=2_000_000_000)

    response = post_turn(owner_client, ada_session, "@ada hi")

    assert response.status_code == 201, response.json()
    assert [request["max_tokens"] for request in provider_requests] == [2_000_000_000]
    assert_each_fits_its_window(provider_requests, 2_147_483_647)
    audit = TurnContextAudit.objects.get()
    # 2,147,483,647 - 2,000,000,000 - 107,374,183 (5 % of the window, rounded up)
    assert (audit.model_context_limit, audit.input_budget) == (2_147_483_647, 40_109_464)


@pytest.fixture
def small_window():
    """A 4,096-token window answering up to 512: its prompt keeps 2,560 tokens."""
    model_alias_set(alias="deepseek", context_window=4096, max_output_tokens=512)


@pytest.mark.parametrize(
    "text",
    ["测试中文" * 1912 + "字字", "😀" * 7700],
    ids=["7,650 Chinese characters", "7,700 emoji"],
)
def test_a_message_in_another_script_too_large_for_the_budget_is_refused_unsent(
    owner_client, ada_session, post_turn, provider_requests, small_window, text
):
    """5,737 tokens of Chinese and 15,400 of emoji (cl100k_base) were estimated at 5/16 of a
    token a character (2,391 and 2,407), within the budget: the turn was sent, its prompt
    past the whole 4,096-token window."""
    response = post_turn(owner_client, ada_session, "@ada " + text)

    assert response.status_code == 422, response.json()
    assert response.json()["detail"]["code"] == "context_budget_exceeded"
    assert "deepseek has an input budget of 2560" in response.json()["detail"]["message"]
    assert provider_requests == []
    assert_nothing_written()


def test_a_message_in_another_script_within_the_budget_runs(
    owner_client, ada_session, post_turn, provider_requests, small_window
):
    response = post_turn(owner_client, ada_session, "@ada " + "你好世界" * 250)

    assert response.status_code == 201, response.json()
    assert_each_fits_its_window(provider_requests, 4096)


def test_messages_stored_with_estimates_of_5_16_a_character_are_counted_anew(
    owner_client, ada_session, post_turn, provider_requests, small_window
):
    """A message stored before estimates counted scripts keeps its estimate of 5/16 of a token a
    character: 980 Chinese characters at 308 tokens (840 on cl100k_base). It left the
    history whole in the next prompt, about 3,000 tokens counted anew, for a budget of 2,560."""
    question = "@ada " + "请解释这个问题" * 140
    assert post_turn(owner_client, ada_session, question).status_code == 201
    for message in Message.objects.all():
        Message.objects.filter(pk=message.pk).update(
            token_estimate=-(-len(message.content) * 5 // 16)
        )

    response = post_turn(owner_client, ada_session, "@ada " + "还有呢？" * 100)

    assert response.status_code == 201, response.json()
    assert_each_fits_its_window(provider_requests, 4096)
    assert question not in str(provider_requests[-1]["messages"])
    audit = TurnContextAudit.objects.get(turn__turn_index=2)
    assert audit.pruned is True and audit.estimated_tokens_before > 2560


def test_a_summary_cut_to_fit_the_first_answers_prompt_runs_the_turn(
    owner_client, ada_session, post_turn, provider_requests, long_answers
):
    """The first agent's prompt is built as the turn is claimed, before the turn exists: a
    summary it had to cut made its log line read the turn's id, and the turn answered 500
    (every later turn too, for a summary larger than the budget on its own)."""
    SessionSummary.objects.create(
        session=ada_session,
        from_sequence=1,
        to_sequence=0,
        summary_text="The team weighed every option at length. " * 400,
        decisions=["Use Postgres"],
    )
    response = post_turn(owner_client, ada_session, "@ada Go on. " + "word " * 1200)

    assert response.status_code == 201, response.json()
    assert_each_fits_its_window(provider_requests, 8192)
    system = provider_requests[0]["messages"][0]["content"]
    assert "The team weighed every option" in system and CUT_MARK.strip() in system
    assert TurnContextAudit.objects.get().pruned is True
