import hashlib
import math
import random
from pathlib import Path

import pytest

from orchestration.budget import (
    PRUNE_AT,
    SUMMARIZE_AT,
    SUMMARY_EVERY_TURNS,
    ContextBudget,
    character_units,
    estimate_tokens,
    estimate_units,
    fits,
    length_within_units,
    smallest_window,
    summary_due,
)
from orchestration.litellm_loader import load_litellm


def test_ladder_constants():
    assert (SUMMARIZE_AT, PRUNE_AT, SUMMARY_EVERY_TURNS) == (0.70, 0.90, 8)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("a", 1), ("abcd", 2), ("x" * 16, 5), ("x" * 17, 6), ("x" * 1000, 313)],
)
def test_heuristic_estimate(text, expected):
    assert estimate_tokens(text) == expected
    assert expected == math.ceil(len(text) / 4 * 1.25)


# Ordinary text in each script, with what OpenAI's tokenizers count it (cl100k_base, o200k_base,
# tiktoken 0.14; `test_the_figures_are_the_tokenizers`).
SCRIPTS = {
    "english": (
        "The committee met on Tuesday to review the quarterly budget. After a long discussion "
        "about travel costs, they agreed to postpone the new office until spring.",
        29,
        29,
    ),
    "code": (
        "def merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:\n"
        "    result: list[tuple[int, int]] = []\n"
        "    for start, end in sorted(intervals):\n"
        "        if result and start <= result[-1][1]:\n"
        "            result[-1] = (result[-1][0], max(result[-1][1], end))\n"
        "        else:\n"
        "            result.append((start, end))\n"
        "    return result\n",
        91,
        91,
    ),
    "russian": (
        "Вчера вечером мы долго гуляли по набережной и разговаривали о будущем. Погода была "
        "тёплая, хотя с реки дул прохладный ветер.",
        61,
        38,
    ),
    "kazakh": (
        "Кеше кешке біз өзен жағасында серуендедік және жазғы демалыс жоспарлары туралы "
        "әңгімелестік.",
        67,
        30,
    ),
    "greek": (
        "Χθες το απόγευμα πήγαμε στην παραλία με τους φίλους μας. Ο καιρός ήταν υπέροχος και "
        "η θάλασσα πολύ ζεστή.",
        91,
        39,
    ),
    "hebrew": ("אתמול בערב הלכנו לטייל ליד הים. מזג האוויר היה נעים.", 48, 22),
    "arabic": (
        "ذهبنا أمس إلى السوق القديم في وسط المدينة. كان المكان مزدحماً بالناس، واشترينا بعض "
        "التوابل والقهوة.",
        67,
        28,
    ),
    "hindi": (
        "कल शाम हम सब दोस्त पार्क में घूमने गए। मौसम बहुत अच्छा था और हल्की हवा चल रही थी।",
        82,
        23,
    ),
    "tamil": ("நேற்று மாலை நாங்கள் கடற்கரைக்குச் சென்றோம். வானிலை மிகவும் அழகாக இருந்தது.", 105, 26),
    "thai": ("เมื่อวานนี้เราไปเที่ยวตลาดน้ำกับครอบครัว อากาศดีมากและมีผู้คนมากมาย", 65, 25),
    "armenian": ("Երեկ երեկոյան մենք զբոսնեցինք գետի ափին։ Եղանակը շատ լավ էր։", 111, 26),
    "georgian": (
        "გუშინ საღამოს ჩვენ მდინარის ნაპირზე ვისეირნეთ. ამინდი ძალიან კარგი იყო.",
        131,
        26,
    ),
    "chinese": (
        "昨天晚上我们在河边散步，聊了很多关于未来的计划。天气很好，虽然风有点凉。"
        "后来我们去了一家小咖啡馆，点了茶和蛋糕。",
        76,
        44,
    ),
    "chinese_traditional": (
        "臺灣的夜市文化非常豐富，街道兩旁擺滿了攤販，販賣鹽酥雞、蚵仔煎與珍珠奶茶。",
        67,
        43,
    ),
    "japanese": (
        "昨日の夜、私たちは川沿いを散歩しながら、将来の計画についてたくさん話しました。"
        "その後、小さなカフェに入って、お茶とケーキを注文しました。",
        68,
        48,
    ),
    "korean": (
        "어제 저녁에 우리는 강가를 산책하면서 미래에 대한 계획을 많이 이야기했습니다.",
        46,
        21,
    ),
    "vietnamese": (
        "Hôm qua chúng tôi đi dạo bên bờ sông và nói chuyện rất lâu về kế hoạch.",
        38,
        22,
    ),
    "polish": (
        "Wczoraj wieczorem spacerowaliśmy nad rzeką i rozmawialiśmy o planach na wakacje.",
        29,
        26,
    ),
    "emoji": ("😀😃😄😁😆😅🤣😂🙂🙃😉😊😇🥰😍🤩😘😗☺️😚😙🥲😋😛😜🤪😝🤑🤗🤭🫢🫣🤫🤔🫡🤐", 88, 66),
    "emoji_sequences": ("👨‍👩‍👧‍👦👩‍❤️‍👨👨‍💻👩🏽‍🚀🏳️‍🌈🏴‍☠️🧑🏿‍🤝‍🧑🏻🐻‍❄️❤️‍🔥🇺🇦🇯🇵🇧🇷👍🏾✌🏼🫶🏻", 136, 86),
    "mixed": (
        "Привет! The deploy (версия 2.4) failed: ошибка 502 на api.example.com. "
        "请检查日志 and ping @ops 🚨. “Don’t panic” — it’s fine…",
        50,
        43,
    ),
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_plain_estimate_is_at_least_the_real_count_in_every_script(script):
    """Every character counted 5/16 of a token: 56 Chinese characters came to 18 tokens (76 on
    cl100k_base), 37 emoji to 12 (88), 60 Armenian letters to 19 (111)."""
    text, cl100k, o200k = SCRIPTS[script]
    assert estimate_tokens(text) >= max(cl100k, o200k)


@pytest.mark.parametrize("script", ["english", "code"])
def test_ascii_text_is_estimated_as_before(script):
    text = SCRIPTS[script][0]
    assert estimate_tokens(text) == math.ceil(len(text) * 5 / 16)


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_the_figures_are_the_tokenizers(encoding, monkeypatch):
    """Counted again where tiktoken and the encodings litellm ships are at hand, never fetched."""
    tiktoken = pytest.importorskip("tiktoken")
    shipped = Path(load_litellm().__file__).parent / "litellm_core_utils" / "tokenizers"
    url = f"https://openaipublic.blob.core.windows.net/encodings/{encoding}.tiktoken"
    if not (shipped / hashlib.sha1(url.encode()).hexdigest()).exists():
        pytest.skip(f"{encoding} is not shipped with litellm here")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(shipped))
    column = 1 if encoding == "cl100k_base" else 2
    counts = {
        name: len(tiktoken.get_encoding(encoding).encode(row[0])) for name, row in SCRIPTS.items()
    }
    assert counts == {name: row[column] for name, row in SCRIPTS.items()}


def test_texts_estimated_together_never_count_more_than_apart():
    """What bounds a prompt before it is built adds its parts' estimates (and the stored
    estimates of messages): the units of a text are its characters' added, rounded up once."""
    generator = random.Random(7)
    ranges = [(0x20, 0x7F), (0xA0, 0x800), (0x300, 0x370), (0x590, 0x600), (0x800, 0x10000)]
    ranges += [(0x3000, 0x3100), (0xE80, 0xF00), (0x1F300, 0x1FB00), (0xD800, 0xE000)]

    def piece() -> str:
        return "".join(
            chr(generator.randrange(*generator.choice(ranges)))
            for _ in range(generator.randrange(0, 40))
        )

    for _ in range(2000):
        first, second = piece(), piece()
        assert estimate_units(first + second) == estimate_units(first) + estimate_units(second)
        assert estimate_units(first) == sum(character_units(c) for c in first)
        assert estimate_tokens(first + second) <= estimate_tokens(first) + estimate_tokens(second)
        units = generator.randrange(0, 600)
        length = length_within_units(first, units)
        assert estimate_units(first[:length]) <= units
        assert length == len(first) or estimate_units(first[: length + 1]) > units


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

    def due(tokens: int) -> bool:  # a prompt of history but for 1,000 tokens
        return summary_due(
            estimated_tokens=tokens, history_tokens=tokens - 1_000, budget=budget, turn_index=3
        )

    assert not due(6_900)
    assert not due(6_999)
    assert due(7_000)


def test_summary_due_every_eighth_turn():
    budget = ContextBudget.for_window(128000, 4096)
    due = [
        t
        for t in range(1, 25)
        if summary_due(estimated_tokens=10, history_tokens=0, budget=budget, turn_index=t)
    ]
    assert due == [8, 16, 24]


def test_summary_threshold_is_exact_for_awkward_budgets():
    # 0.7 * 6144 = 4300.8, so 4300 is under and 4301 is over.
    budget = ContextBudget.for_window(8192, 1024)
    for tokens, expected in ((4300, False), (4301, True)):
        due = summary_due(estimated_tokens=tokens, history_tokens=4000, budget=budget, turn_index=1)
        assert due is expected


def test_summary_due_only_when_the_history_takes_the_prompt_past_70_percent():
    """A summary folds the history since the latest summary, nothing else: a prompt past the
    line without that history (its system prompt, input and the turn's earlier answers) stays
    past it, and brings no summary on but every eighth turn."""
    budget = ContextBudget(
        context_window=0, output_reserve=0, overhead_reserve=0, input_budget=10_000
    )

    def due(*, tokens: int, history: int, turn_index: int = 3) -> bool:
        return summary_due(
            estimated_tokens=tokens, history_tokens=history, budget=budget, turn_index=turn_index
        )

    assert due(tokens=9_000, history=2_001)  # 6,999 without its history
    assert not due(tokens=9_000, history=2_000)  # 7,000 without: past the line all the same
    assert not due(tokens=9_000, history=0)
    assert due(tokens=9_000, history=0, turn_index=8)
    assert not due(tokens=6_999, history=6_999)  # under the line


def test_prune_limit_is_90_percent_floored():
    assert ContextBudget.for_window(8192, 1024).prune_limit == 5529  # 0.9 * 6144 = 5529.6


def test_a_share_is_worked_out_once(monkeypatch):
    """Every turn asks for the same few shares (its aliases' windows and budgets): reading the
    ratio's text into a fraction each time was about 1 % of a turn's CPU."""
    from orchestration import budget as budget_module

    getattr(budget_module.share_of, "cache_clear", lambda: None)()  # a fresh start
    made = []
    real = budget_module.Fraction

    def counting(*args):
        made.append(args)
        return real(*args)

    monkeypatch.setattr(budget_module, "Fraction", counting)

    first = ContextBudget.for_window(30_010, 100)
    again = ContextBudget.for_window(30_010, 100)

    assert first == again
    assert first.overhead_reserve == again.overhead_reserve == 1501
    assert len(made) == 1
