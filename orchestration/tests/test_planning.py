from orchestration.planning import parse_tags

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
