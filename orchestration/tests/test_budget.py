import math

import pytest

from orchestration.budget import (
    PRUNE_AT,
    SUMMARIZE_AT,
    SUMMARY_EVERY_TURNS,
    ContextBudget,
    estimate_tokens,
    fits,
    smallest_window,
    summary_due,
)


def test_ladder_constants():
    assert (SUMMARIZE_AT, PRUNE_AT, SUMMARY_EVERY_TURNS) == (0.70, 0.90, 8)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("a", 1), ("abcd", 2), ("x" * 16, 5), ("x" * 17, 6), ("x" * 1000, 313)],
)
def test_heuristic_estimate(text, expected):
    assert estimate_tokens(text) == expected
    assert expected == math.ceil(len(text) / 4 * 1.25)


def test_unknown_model_uses_the_heuristic():
    assert estimate_tokens("x" * 40, model="pantheon_demo/ada") == 13


def test_known_model_uses_litellm_counter():
    text = "hello world " * 50
    counted = estimate_tokens(text, model="gpt-4o")
    assert counted > 0
    assert counted != estimate_tokens(text)


def test_window_8192():
    budget = ContextBudget.for_window(8192, 1024)
    assert budget == ContextBudget(
        context_window=8192, output_reserve=1024, overhead_reserve=1024, input_budget=6144
    )


def test_window_128000():
    budget = ContextBudget.for_window(128000, 4096)
    assert (budget.output_reserve, budget.overhead_reserve, budget.input_budget) == (
        4096,
        6400,
        117504,
    )


def test_the_whole_answer_asked_for_is_reserved():
    """The reserve was capped at a fifth of the window (819 here, a budget of 2253), though
    every call asks for the whole max_output_tokens: a full prompt and the answer overran it."""
    budget = ContextBudget.for_window(4096, 2048)
    assert (budget.output_reserve, budget.overhead_reserve, budget.input_budget) == (
        2048,
        1024,
        1024,
    )


def test_a_window_too_small_for_the_answer_leaves_no_prompt():
    """2500 - 2000 - 1024 is below 0: it left 976 tokens (the answer capped at 500)."""
    budget = ContextBudget.for_window(2500, 2000)
    assert budget.input_budget == 0
    assert not fits(1, budget)


@pytest.mark.parametrize(
    ("window", "longest"),
    [
        (1024, 1),
        (2500, 2000),
        (8192, 4096),
        (20_480, 10_000),
        (200_000, 150_000),
        (2_147_483_647, 1),
        (2_147_483_647, 2_000_000_000),
        (2_147_483_647, 2_147_483_646),
    ],
)
def test_a_full_prompt_and_the_answer_asked_for_fit_the_window(window, longest):
    budget = ContextBudget.for_window(window, longest)
    if budget.input_budget:
        assert budget.input_budget + longest + budget.overhead_reserve == window
    assert budget.input_budget + longest <= window


@pytest.mark.parametrize("longest", [1, 964, 1024, 2000, 18_000, 19_000, 40_000, 2_147_483_646])
@pytest.mark.parametrize("prompt", [1, 512, 100_000])
def test_smallest_window_is_the_first_that_leaves_the_prompt(longest, prompt):
    window = smallest_window(longest, prompt)
    assert ContextBudget.for_window(window, longest).input_budget >= prompt
    assert ContextBudget.for_window(window - 1, longest).input_budget < prompt


def test_smallest_window_around_the_overhead_floor():
    # Up to a window of 20,480 the overhead is its floor of 1024; past it, 5 % of the window.
    for longest in range(18_000, 19_500, 7):
        window = smallest_window(longest, 512)
        assert ContextBudget.for_window(window, longest).input_budget >= 512
        assert ContextBudget.for_window(window - 1, longest).input_budget < 512


def test_tiny_window_never_goes_negative():
    budget = ContextBudget.for_window(1000, 512)
    assert budget.input_budget == 0
    assert fits(0, budget)
    assert not fits(1, budget)


def test_overhead_reserve_rounds_up():
    # 5 % of 20_010 is 1000.5 -> below the 1024 floor; 5 % of 30_010 is 1500.5 -> 1501.
    assert ContextBudget.for_window(20_010, 100).overhead_reserve == 1024
    assert ContextBudget.for_window(30_010, 100).overhead_reserve == 1501


def test_fits_is_inclusive():
    budget = ContextBudget.for_window(8192, 1024)
    assert fits(6144, budget)
    assert not fits(6145, budget)


def test_summary_due_at_70_percent_not_69():
    budget = ContextBudget(
        context_window=0, output_reserve=0, overhead_reserve=0, input_budget=10_000
    )
    assert not summary_due(estimated_tokens=6_900, budget=budget, turn_index=3)
    assert not summary_due(estimated_tokens=6_999, budget=budget, turn_index=3)
    assert summary_due(estimated_tokens=7_000, budget=budget, turn_index=3)


def test_summary_due_every_eighth_turn():
    budget = ContextBudget.for_window(128000, 4096)
    due = [t for t in range(1, 25) if summary_due(estimated_tokens=10, budget=budget, turn_index=t)]
    assert due == [8, 16, 24]


def test_summary_threshold_is_exact_for_awkward_budgets():
    # 0.7 * 6144 = 4300.8, so 4300 is under and 4301 is over.
    budget = ContextBudget.for_window(8192, 1024)
    assert not summary_due(estimated_tokens=4300, budget=budget, turn_index=1)
    assert summary_due(estimated_tokens=4301, budget=budget, turn_index=1)


def test_prune_limit_is_90_percent_floored():
    assert ContextBudget.for_window(8192, 1024).prune_limit == 5529  # 0.9 * 6144 = 5529.6
