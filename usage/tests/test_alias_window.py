"""An alias's window holds a prompt of at least 512 tokens beside its whole answer (the
`max_tokens` every call asks for) and the overhead."""

from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from usage.models import ModelAlias

pytestmark = pytest.mark.django_db


def alias(window: int, longest: int) -> ModelAlias:
    return ModelAlias(
        alias="wide",
        litellm_model="openai/gpt-4o",
        context_window=window,
        max_output_tokens=longest,
    )


@pytest.mark.parametrize(
    ("window", "longest", "left", "answer", "overhead", "smallest"),
    [
        # A fifth of the window stood for the answer: 500, 220, 429,496,729, 8,000.
        (2500, 2000, "0", "2,000", "1,024", "3,536"),
        (1100, 1099, "0", "1,099", "1,024", "2,635"),
        (2_147_483_647, 2_147_483_646, "0", "2,147,483,646", "107,374,183", "2,260,509,640"),
        # 5 % of the window is past the overhead's floor (1,024) here.
        (40_000, 37_500, "500", "37,500", "2,000", "40,013"),
    ],
)
def test_a_window_that_cannot_hold_the_prompt_beside_the_answer_is_refused(
    window, longest, left, answer, overhead, smallest
):
    with pytest.raises(ValidationError) as refused:
        alias(window, longest).full_clean()

    assert refused.value.message_dict == {
        "context_window": [
            f"Leaves the prompt {left} tokens once the answer ({answer}) and the overhead "
            f"({overhead}) are kept: at least 512 are needed; answers of {answer} tokens need "
            f"a window of {smallest} or more."
        ]
    }


@pytest.mark.parametrize(
    ("window", "longest"),
    [
        (3536, 2000),
        (2635, 1099),
        (40_013, 37_500),
        (40_000, 37_488),
        (2_147_483_647, 2_040_108_952),  # the most that window leaves an answer
        (1537, 1),
    ],
)
def test_a_window_that_holds_the_prompt_beside_the_answer_is_accepted(window, longest):
    alias(window, longest).full_clean()
    with pytest.raises(ValidationError, match="Leaves the prompt 511 tokens"):
        alias(window - 1, longest).full_clean()


def test_the_seeded_aliases_hold_their_answers():
    """The migrations' aliases (windows of 32k and more, answers up to 4k) pass the rule."""
    seeded = list(ModelAlias.objects.order_by("alias"))

    assert [row.alias for row in seeded] == ["deepseek", "gpt_oss", "llama", "premium", "qwen"]
    for row in seeded:
        row.full_clean()


def test_an_alias_saved_before_the_rule_can_be_retired_as_it_is_and_not_enabled_again():
    ModelAlias.objects.create(
        alias="wide", litellm_model="openai/gpt-4o", context_window=2500, max_output_tokens=2000
    )
    out = StringIO()

    call_command("set_model_alias", "wide", "--disable", stdout=out)
    with pytest.raises(CommandError, match="Leaves the prompt 0 tokens"):
        call_command("set_model_alias", "wide", "--enable", stdout=StringIO())

    assert "wide" in out.getvalue()
    assert ModelAlias.objects.get(alias="wide").enabled is False
