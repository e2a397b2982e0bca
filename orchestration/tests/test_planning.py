import pytest

from orchestration.planning import parse_tags, tagged_in_code_only

KEYS = ["ada", "bob", "cleo", "data_bot"]


def test_tags_come_back_in_first_mention_order():
    assert parse_tags("@cleo then @ada, and finally @bob", KEYS) == ["cleo", "ada", "bob"]


def test_a_key_tagged_twice_is_returned_once_at_its_first_position():
    assert parse_tags("@bob @ada @bob @ada", KEYS) == ["bob", "ada"]


def test_unknown_keys_are_dropped():
    assert parse_tags("@zed and @ada and @nobody", KEYS) == ["ada"]


def test_email_addresses_are_not_tags():
    assert parse_tags("mail ada@bob.dev or x@ada", KEYS) == []


def test_mentions_are_case_insensitive():
    assert parse_tags("@Ada and @BOB", KEYS) == ["ada", "bob"]


def test_a_longer_key_does_not_tag_its_prefix():
    assert parse_tags("@ada_lovelace @bobby", KEYS) == []


def test_punctuation_ends_a_key():
    assert parse_tags("(@ada), @bob! @cleo? @data_bot.", KEYS) == ["ada", "bob", "cleo", "data_bot"]


def test_tag_at_start_of_text_and_after_newline():
    assert parse_tags("@bob\n@ada", KEYS) == ["bob", "ada"]


def test_keys_longer_than_32_characters_never_match():
    long_key = "a" * 33
    assert parse_tags(f"@{long_key}", [long_key, "a" * 32]) == []


def test_no_tags_gives_an_empty_list():
    assert parse_tags("hello everyone", KEYS) == []


def test_valid_keys_may_be_any_iterable():
    assert parse_tags("@ada @bob", (key for key in ["bob", "ada"])) == ["ada", "bob"]


@pytest.mark.parametrize(
    "text",
    ["请@ada回答", "こんにちは@ada", "@adaさん、お願いします", "@ada님 답변해 주세요", "สวัสดี@ada"],
)
def test_a_tag_may_run_into_a_script_written_without_spaces(text):
    """`请@ada回答` was refused (422 no_valid_tagged_agents) though `@ada回答` tagged ada: the
    Chinese character before the @ counted as the end of an email's local part."""
    assert parse_tags(text, KEYS) == ["ada"]


@pytest.mark.parametrize(
    "text", ["1@ada", "merci@ada", "привет@ada", "ana@ada.dev", "_@ada", "ａ@ada"]
)
def test_a_letter_or_digit_of_a_script_written_with_spaces_before_the_at_is_an_address(text):
    assert parse_tags(text, KEYS) == []


def test_a_key_that_runs_on_into_a_letter_is_another_name():
    """`@adaé` tagged ada."""
    assert parse_tags("@adaé @bobцарь @cleo1 @data_bot_2", KEYS) == []


def test_a_key_that_runs_on_into_a_combining_mark_is_another_name_too():
    """ "@ada" and U+0301 reads "@adá", as "@adaé" does: it tagged ada."""
    assert parse_tags("@ada\u0301 @bob\u0308", KEYS) == []
    assert parse_tags("e\u0301@ada", KEYS) == []


def test_punctuation_next_to_a_tag_keeps_it_a_tag():
    assert parse_tags("@ada's (@bob) @cleo-bot, «@data_bot»", KEYS) == [
        "ada",
        "bob",
        "cleo",
        "data_bot",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Run `@ada` in the shell, @bob",
        "``a `@ada` b`` then @bob",
        "```python\ndecorated = @ada\n```\n@bob",
        "~~~\n@ada\n~~~~\n@bob",
        "```\n@ada\n``` not a fence\n@ada\n",  # closed only by a fence alone on its line
    ],
)
def test_a_tag_in_code_does_not_count(text):
    """A tag in inline code or a fenced block counted, as if the user had called the agent."""
    assert parse_tags(text, KEYS) == (["bob"] if "@bob" in text else [])


def test_backticks_that_open_no_code_leave_the_tags_after_them():
    assert parse_tags("a lone ` before @ada, and ``` inside a line @bob", KEYS) == ["ada", "bob"]


@pytest.mark.parametrize("text", ["＠ada 你看呢", "请＠ada回答", "(＠ada)", "＠Ada and @bob"])
def test_the_fullwidth_at_sign_cjk_input_methods_type_tags_too(text):
    """`＠ada` (U+FF20, what a Chinese or Japanese input method types) was no tag."""
    assert parse_tags(text, ["ada", "bob"])[0] == "ada"


def test_a_fullwidth_at_sign_inside_a_word_is_no_tag():
    assert parse_tags("mail＠ada and x＠bob", ["ada", "bob"]) == []


@pytest.mark.parametrize(
    "text",
    [
        "@bob read https://medium.com/@ada/launch-notes",
        "@bob see <https://x.com/@ada>",
        "@bob: www.youtube.com/@ada/videos",
        "@bob [her post](https://mastodon.social/@ada)",
        # A phone's keyboard capitalizes a message's first word.
        "Www.youtube.com/@ada has it, @bob",
        "@bob WWW.YOUTUBE.COM/@ada",
    ],
)
def test_a_handle_in_a_link_is_no_tag(text):
    """A pasted profile or post link (`https://medium.com/@ada/…`) called that agent too, a call
    and its bill the user never asked for, as an address's `@` would."""
    assert parse_tags(text, KEYS) == ["bob"]


def test_a_tag_right_after_a_link_still_counts():
    assert parse_tags("read https://example.com/post @ada", KEYS) == ["ada"]


def test_a_message_that_tags_only_in_a_link_is_not_said_to_tag_in_code():
    """Its refusal would say "a tag in code does not count": there is no code."""
    assert tagged_in_code_only("https://medium.com/@ada", KEYS) is False
    assert tagged_in_code_only("`@ada` https://medium.com/@bob", KEYS) is True
