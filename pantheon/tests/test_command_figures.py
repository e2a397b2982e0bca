"""Every figure a command takes is typed as the console's amount boxes take one (and
set_model_price its prices): digits, an age with at most one decimal point, spaces around it
aside. recover_turns' and prune_idempotency_keys' ages went through float (1e3 was 1000
seconds, 1_000 too), set_model_alias's token counts through int (1_000_000, +8192, Arabic-Indic
digits), while the README calls such a figure a usage error, exit 2; the operations tester's
catch."""

import pytest
from django.core.management import ManagementUtility, call_command

from pantheon.figures import AMOUNT_EXPECTED
from usage.models import ModelAlias

pytestmark = pytest.mark.django_db

NOT_PLAIN = ["1e3", "1E+3", "1_000", "1,000", "1 000", "+5", "-5", "\u0661\u0662", "nan", "inf"]


def manage(*argv: str) -> int:
    with pytest.raises(SystemExit) as exited:
        ManagementUtility(["manage.py", *argv]).execute()
    return exited.value.code


@pytest.mark.parametrize("typed", NOT_PLAIN)
@pytest.mark.parametrize(
    ("command", "unit"),
    [
        ("recover_turns", "seconds"),
        ("prune_idempotency_keys", "hours"),
        ("purge_deleted_chats", "days"),
    ],
)
def test_an_age_is_a_plain_number(command, unit, typed, capsys):
    assert manage(command, "--dry-run", "--older-than", typed) == 2

    last = capsys.readouterr().err.splitlines()[-1]
    assert f"argument --older-than: expected a number of {unit} from 0 to " in last
    assert f", {AMOUNT_EXPECTED}, not {typed!r}" in last


@pytest.mark.parametrize(
    ("command", "typed", "says"),
    [
        ("recover_turns", " 900 ", "no progress for 900s"),
        ("recover_turns", "1.5", "no progress for 1.5s"),
        ("prune_idempotency_keys", "48", "older than 48 hours"),
        ("prune_idempotency_keys", " 24.5", "older than 24.5 hours"),
    ],
)
def test_a_plain_age_is_taken(command, typed, says, capsys):
    call_command(command, "--older-than", typed)

    assert says in capsys.readouterr().out


@pytest.mark.parametrize("typed", [*NOT_PLAIN, "8192.0", ".5"])
@pytest.mark.parametrize("option", ["--context-window", "--max-output-tokens"])
def test_a_token_count_is_digits(option, typed, capsys):
    before = list(ModelAlias.objects.order_by("pk").values())

    assert manage("set_model_alias", "deepseek", option, typed) == 2

    last = capsys.readouterr().err.splitlines()[-1]
    assert last == (
        f"manage.py set_model_alias: error: argument {option}: expected a whole number such as "
        f"8192 (digits 0-9 only; no sign, exponent or separator), not {typed!r}"
    )
    assert list(ModelAlias.objects.order_by("pk").values()) == before


def test_a_token_count_spaces_around_it_aside_is_taken(capsys):
    call_command("set_model_alias", "deepseek", "--context-window", " 16384 ")

    assert "(context 16384," in capsys.readouterr().out
    assert ModelAlias.objects.get(alias="deepseek").context_window == 16384
