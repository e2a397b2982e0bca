"""Token estimates and the context budget ladder (summarize at 70 %, prune at 90 %)."""

from __future__ import annotations

import functools
import math
import re
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
    """Tokens in `text`: litellm's counter for a model it knows, else the plain estimate
    (`estimate_units`, rounded up to whole tokens).

    The plain estimate overestimates on purpose, in every script: an estimate that runs short
    lets a prompt overflow the provider's window, one that runs long only prunes a little early.
    Two texts estimated together never count more than estimated apart.
    """
    if not text:
        return 0
    if model:
        counted = _count_with_litellm(text, model)
        if counted is not None:
            return counted
    return -(-estimate_units(text) // UNITS_PER_TOKEN)


# The plain estimate counts each character as so many sixteenths of a token, by script. It is
# drawn from what OpenAI's tokenizers (cl100k_base, o200k_base) spend on ordinary text of each
# script, with a margin over the larger of the two: ASCII 5/16 (English spends about 3/16; code
# up to 5/16), Cyrillic 1 token, Greek and Hebrew 1.5, Chinese 2, an emoji 4 (no byte-level
# tokenizer spends more tokens than a character's UTF-8 bytes), a script no tokenizer covers
# well its UTF-8 bytes and a half. A character next to ASCII letters also costs the split it
# makes in their word, which the weights of accented Latin letters (2.5) count.
UNITS_PER_TOKEN = 16
_ASCII_UNITS = 5
_UNKNOWN_UNITS = 56  # a 3-byte character of a script not named below
# Characters of the Basic Multilingual Plane by block of 256 code points (its first two hex
# digits): (first block, last block, sixteenths of a token).
_BLOCK_UNITS: tuple[tuple[int, int, int], ...] = (
    (0x00, 0x02, 40),  # Latin-1 and Latin Extended (ASCII apart), IPA, spacing modifiers
    (0x03, 0x03, 24),  # Greek (combining diacritics apart, `_MIXED_BLOCKS`)
    (0x04, 0x04, 16),  # Cyrillic
    (0x05, 0x05, 40),  # Cyrillic Supplement, Armenian (Hebrew apart)
    (0x06, 0x06, 22),  # Arabic
    (0x07, 0x08, 40),  # Syriac, Thaana, N'Ko, Samaritan, Arabic Extended
    (0x09, 0x09, 28),  # Devanagari, Bengali
    (0x0A, 0x0D, 40),  # Gurmukhi, Gujarati, Oriya, Tamil, Telugu, Kannada, Malayalam, Sinhala
    (0x0E, 0x0E, 28),  # Thai (Lao apart)
    (0x10, 0x10, 40),  # Myanmar, Georgian
    (0x1E, 0x1E, 40),  # Latin Extended Additional (Vietnamese)
    (0x20, 0x20, 24),  # general punctuation (dashes, quotes, ellipsis, ZWJ), currency signs
    (0x21, 0x24, 40),  # letterlike symbols, arrows, mathematical operators, technical symbols
    (0x25, 0x25, 24),  # box drawing, block elements, geometric shapes
    (0x26, 0x27, 40),  # miscellaneous symbols, dingbats
    (0x2E, 0x2F, 32),  # CJK radicals
    (0x30, 0x30, 20),  # Hiragana, Katakana (CJK punctuation apart)
    (0x31, 0x31, 32),  # Bopomofo, Hangul compatibility jamo
    (0x4E, 0x9F, 32),  # CJK Unified Ideographs
    (0xAC, 0xD7, 28),  # Hangul syllables
    (0xD8, 0xDB, 64),  # a high surrogate: a character past the BMP (an emoji), 4 UTF-8 bytes
    (0xDC, 0xDF, 0),  # a low surrogate: counted with its high one
    (0xF9, 0xFA, 32),  # CJK Compatibility Ideographs
    (0xFE, 0xFE, 40),  # variation selectors (emoji presentation), CJK compatibility forms
    (0xFF, 0xFF, 32),  # halfwidth and fullwidth forms
)
# Blocks that hold two scripts: the block, the range weighed apart, and its own weight.
_MIXED_BLOCKS: tuple[tuple[int, str, int], ...] = (
    (0x03, "\u0300-\u036f", 40),  # combining diacritics (text in decomposed form)
    (0x05, "\u0590-\u05ff", 24),  # Hebrew
    (0x0E, "\u0e80-\u0eff", 56),  # Lao
    (0x30, "\u3000-\u303f", 32),  # CJK symbols and punctuation
)


def _block_units() -> tuple[int, ...]:
    units = [_UNKNOWN_UNITS] * 256
    for first, last, weight in _BLOCK_UNITS:
        units[first : last + 1] = [weight] * (last - first + 1)
    return tuple(units)


_UNITS_OF_BLOCK = _block_units()
_WEIGHTS = tuple(sorted(set(_UNITS_OF_BLOCK)))
# Each block's weight as a byte (its index in _WEIGHTS), for bytes.translate and bytes.count.
_WEIGHT_OF_BLOCK = bytes(_WEIGHTS.index(weight) for weight in _UNITS_OF_BLOCK)
_MIXED = tuple(
    (block, re.compile(f"[{characters}]+"), weight - _UNITS_OF_BLOCK[block])
    for block, characters, weight in _MIXED_BLOCKS
)


def estimate_units(text: str) -> int:
    """The plain estimate of `text` in sixteenths of a token (`UNITS_PER_TOKEN`): the sum of
    its characters' (`character_units`), so the units of a text are those of its parts added.

    Counted in C, not character by character: the text as UTF-16 gives each character of the
    BMP its block in one byte (a character past it, its surrogates), translated to its
    weight's index and counted; ASCII and the blocks of two scripts are then set right."""
    if text.isascii():
        return _ASCII_UNITS * len(text)
    blocks = text.encode("utf-16-le", "surrogatepass")[1::2]
    weights = blocks.translate(_WEIGHT_OF_BLOCK)
    units = sum(weights.count(index) * weight for index, weight in enumerate(_WEIGHTS) if weight)
    ascii_count = len(text.encode("ascii", "ignore"))
    units -= (_UNITS_OF_BLOCK[0] - _ASCII_UNITS) * ascii_count
    for block, pattern, difference in _MIXED:
        if block in blocks:
            units += difference * sum(map(len, pattern.findall(text)))
    return units


def character_units(character: str) -> int:
    """One character's share of `estimate_units`."""
    code = ord(character)
    if code < 0x80:
        return _ASCII_UNITS
    if code > 0xFFFF:
        return _UNITS_OF_BLOCK[0xD8]
    for block, pattern, difference in _MIXED:
        if code >> 8 == block and pattern.match(character):
            return _UNITS_OF_BLOCK[block] + difference
    return _UNITS_OF_BLOCK[code >> 8]


def length_within_units(text: str, units: int) -> int:
    """How many of `text`'s first characters come to at most `units` (`estimate_units`)."""
    if units < 0:
        return 0
    if text.isascii():
        return min(len(text), units // _ASCII_UNITS)
    if estimate_units(text) <= units:
        return len(text)
    for length, character in enumerate(text):
        units -= character_units(character)
        if units < 0:
            return length
    return len(text)


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


@functools.lru_cache(maxsize=1024)
def share_of(amount: int, ratio: float) -> Fraction:
    """`ratio × amount` exactly: 0.7 as a binary float would put 70 % a hair off. Remembered:
    every turn asks the same few (its aliases' windows and budgets), and reading the ratio's
    text into a fraction each time was about 1 % of a turn's CPU (py-spy)."""
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


def summary_due(
    *, estimated_tokens: int, history_tokens: int, budget: ContextBudget, turn_index: int
) -> bool:
    """Every SUMMARY_EVERY_TURNS turns, or when a prompt of `estimated_tokens` reaches
    SUMMARIZE_AT of its budget because of its `history_tokens` (the history since the latest
    summary, which a summary folds): not when the rest of it (the system prompt, the input and
    the turn's earlier answers) reaches the line alone, which no summary brings under it."""
    line = share_of(budget.input_budget, SUMMARIZE_AT)
    if estimated_tokens >= line > estimated_tokens - history_tokens:
        return True
    return turn_index > 0 and turn_index % SUMMARY_EVERY_TURNS == 0


def fits(tokens: int, budget: ContextBudget) -> bool:
    return tokens <= budget.input_budget
