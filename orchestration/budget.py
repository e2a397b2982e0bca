"""Token estimates and the context budget ladder (summarize at 70 %, prune at 90 %)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

SUMMARIZE_AT = 0.70
PRUNE_AT = 0.90
SUMMARY_EVERY_TURNS = 8

# What a window keeps beside the prompt and the answer (message framing, the provider's own
# tokens, estimates that run short): 5 % of it, never under 1024.
_OVERHEAD_SHARE = 0.05
_MIN_OVERHEAD_RESERVE = 1024


def estimate_tokens(text: str, model: str | None = None) -> int:
    """Tokens in `text`: litellm's counter for a model it knows, else ~1.25 tokens per 4 chars.

    The fallback overestimates on purpose: an estimate that runs short lets a prompt overflow
    the provider's window, one that runs long only prunes a little early.
    """
    if not text:
        return 0
    if model:
        counted = _count_with_litellm(text, model)
        if counted is not None:
            return counted
    return estimate_tokens_of_chars(len(text))


def estimate_tokens_of_chars(length: int) -> int:
    """The plain estimate (`estimate_tokens` without a model) of a text of `length` characters:
    ceil(length / 4 * 1.25), in integers so that long texts cannot pick up float error. It
    never counts two texts together as more than each apart."""
    return -(-length * 5 // 16)


def _count_with_litellm(text: str, model: str) -> int | None:
    from orchestration.litellm_loader import load_litellm

    litellm = load_litellm()
    if model not in litellm.model_cost:
        return None
    # Some models (llama, cohere) are counted with a Hugging Face tokenizer that litellm
    # downloads on first use; the heuristic is better than reaching for the network.
    tokenizer_kind = getattr(litellm.utils, "huggingface_tokenizer_kind", None)
    if tokenizer_kind is None or tokenizer_kind(model) is not None:
        return None
    try:
        return int(litellm.token_counter(model=model, text=text))
    except Exception:
        return None


def share_of(amount: int, ratio: float) -> Fraction:
    """`ratio × amount` exactly: 0.7 as a binary float would put 70 % a hair off."""
    return Fraction(str(ratio)) * amount


def smallest_window(max_output_tokens: int, input_tokens: int) -> int:
    """The smallest window leaving a prompt of `input_tokens` beside answers of
    `max_output_tokens` and the overhead.

    A window less its overhead is the lesser of window - 1024 and window × 95 % (rounded down),
    and grows with the window: the smallest one that holds `needed` is the first where both do.
    """
    needed = max_output_tokens + input_tokens
    return max(
        needed + _MIN_OVERHEAD_RESERVE, math.ceil(needed / (1 - Fraction(str(_OVERHEAD_SHARE))))
    )


@dataclass(frozen=True)
class ContextBudget:
    context_window: int
    output_reserve: int
    overhead_reserve: int
    input_budget: int

    @classmethod
    def for_window(cls, context_window: int, max_output_tokens: int) -> ContextBudget:
        """The prompt gets what the answer and the overhead leave of the window.

        The answer's reserve is the alias's whole max_output_tokens, the `max_tokens` every
        call asks the provider for: a prompt of the whole input budget and an answer of that
        length then still fit the window. (A reserve capped at a fifth of the window let a
        full prompt and the answer asked for overrun it: the provider refused the call as
        context_length_exceeded.) A window too small for the answer leaves a budget of 0,
        which refuses every turn rather than sending one that cannot fit.
        """
        output_reserve = max_output_tokens
        overhead_reserve = max(
            _MIN_OVERHEAD_RESERVE, math.ceil(share_of(context_window, _OVERHEAD_SHARE))
        )
        input_budget = max(0, context_window - output_reserve - overhead_reserve)
        return cls(
            context_window=context_window,
            output_reserve=output_reserve,
            overhead_reserve=overhead_reserve,
            input_budget=input_budget,
        )

    @property
    def prune_limit(self) -> int:
        """The most tokens a prompt may carry before the oldest history is pruned."""
        return math.floor(share_of(self.input_budget, PRUNE_AT))


def summary_due(*, estimated_tokens: int, budget: ContextBudget, turn_index: int) -> bool:
    if estimated_tokens >= share_of(budget.input_budget, SUMMARIZE_AT):
        return True
    return turn_index > 0 and turn_index % SUMMARY_EVERY_TURNS == 0


def fits(tokens: int, budget: ContextBudget) -> bool:
    return tokens <= budget.input_budget
