"""What an operator reads first: `manage.py COMMAND --help` of the project's own commands. Every
option the command adds says what it takes (its unit, its format, what leaving it out means);
dates say they are UTC days; the help says what the command changes and how it exits."""

import argparse
from pathlib import Path

import pytest
from django.core.management import load_command_class

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = sorted(
    (path.parts[-4], path.stem)
    for path in ROOT.glob("*/management/commands/*.py")
    if path.stem != "__init__"
)
# Django's own options (--verbosity, --settings, ...) are documented by Django.
DJANGO_OPTIONS = {
    "help",
    "version",
    "verbosity",
    "settings",
    "pythonpath",
    "traceback",
    "no_color",
    "force_color",
    "skip_checks",
}


def parser_of(app: str, name: str) -> argparse.ArgumentParser:
    return load_command_class(app, name).create_parser("manage.py", name)


def own_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions if action.dest not in DJANGO_OPTIONS]


def test_the_project_commands_are_found():
    assert {name for _, name in COMMANDS} >= {"rollup_usage", "set_model_alias", "seed_demo"}


@pytest.mark.parametrize(("app", "name"), COMMANDS)
def test_every_option_a_command_adds_is_explained(app, name):
    parser = parser_of(app, name)
    silent = [
        "/".join(action.option_strings) or action.dest
        for action in own_actions(parser)
        if not action.help
    ]
    assert silent == [], f"{name}: no help for {', '.join(silent)}"


@pytest.mark.parametrize("name", ["rollup_usage", "reconcile_usage"])
def test_a_since_says_it_is_a_utc_day_written_as_iso(name):
    since = next(a for a in parser_of("usage", name)._actions if a.dest == "since")
    assert since.metavar == "DATE"
    assert "UTC" in since.help and "2026-11-01" in since.help


@pytest.mark.parametrize(
    ("app", "name", "says"),
    [
        ("usage", "rollup_usage", "exit 2"),
        ("usage", "reconcile_usage", "exit 1 on any drift, 2"),
        ("sessions_app", "prune_idempotency_keys", "2 on a usage error"),
        ("sessions_app", "seed_demo", "superuser"),
    ],
)
def test_the_description_says_what_an_operator_must_know(app, name, says):
    assert says in " ".join(parser_of(app, name).description.split())


def test_usage_month_totals_says_which_month_which_calls_and_which_units():
    """What a finance operator must know before a month's figures go on an invoice: the month
    is the UTC calendar month the caps count, which calls count, and the units of the amounts."""
    parser = parser_of("usage", "usage_month_totals")
    description = " ".join(parser.description.split())
    helps = {action.dest: action.help for action in parser._actions}
    assert "calendar month (UTC: the month the credit caps" in description
    assert "calls are every LLM call the ledger records for the user" in description
    assert "completed, failed, under way or lost" in description
    assert "the monthly counters count completed calls only" in description
    assert "provider cost (USD), credits" in description and "10 decimals" in description
    assert "per-user CSV (rows=user)" in description
    assert "2026-11" in helps["month"] and "UTC" in helps["month"]
    assert "exact decimal strings" in helps["format"]


def test_set_model_alias_says_units_and_rules():
    helps = {a.dest: a.help for a in parser_of("usage", "set_model_alias")._actions}
    assert "tokens" in helps["context_window"] and "1024" in helps["context_window"]
    assert "_API_KEY" in helps["api_key_env"]


@pytest.mark.parametrize(("app", "name"), COMMANDS)
def test_every_help_ends_with_exit_3_for_a_database_that_failed(app, name):
    assert (
        "Exit 3 when the database cannot be reached, is not migrated or fails mid-run"
        in " ".join(parser_of(app, name).format_help().split())
    )


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("set_model_alias", "A refused value exits 1, a malformed one 2, a database failure 3."),
        ("set_model_price", "A refused value exits 1, a malformed one 2, a database failure 3."),
        ("rollup_usage", "exit 2 on a usage error (a bad or future --since), 3 when the database"),
        ("reconcile_usage", "exit 1 on any drift, 2 on a usage error, 3 when the database"),
        (
            "usage_month_totals",
            "Exit 0 when done, 1 when no user has the --user username, 2 on a usage error (a "
            "--month malformed, no such month or not begun yet), 3 when the database",
        ),
    ],
)
def test_a_description_that_lists_the_exit_codes_lists_them_all(name, says):
    """set_model_alias's said "A refused value exits 1, a malformed one 2." and stopped there,
    which reads as the whole list: its exit 3 was only in the epilog below its options."""
    assert says in " ".join(parser_of("usage", name).description.split())


@pytest.mark.parametrize(
    ("name", "setting", "says"),
    [
        ("prune_idempotency_keys", "PANTHEON_IDEMPOTENCY_KEY_HOURS", "KEY_HOURS, here 48)"),
        ("recover_turns", "PANTHEON_TURN_STALE_SECONDS", "STALE_SECONDS, here 900)"),
    ],
)
def test_a_default_from_a_setting_is_the_value_in_force(settings, name, setting, says):
    """prune_idempotency_keys' help said "(default PANTHEON_IDEMPOTENCY_KEY_HOURS, 24)" while
    it pruned at 48 hours, the value set: the operations tester's catch."""
    setattr(settings, setting, 48 if "HOURS" in setting else 900)

    help_text = " ".join(parser_of("sessions_app", name).description.split())

    assert says in help_text
    assert ", 24)" not in help_text


# What each description says of its exit codes and of -v 0, as the README's "Commands" section
# says it and each command does (recover_turns said neither, prune_idempotency_keys gave only
# its exit 2, seed_demo not the exit 1 of its refusal, and rollup_usage "nothing with -v 0"
# where a --dry-run prints its count); the operations tester's catch.
SAYS_HOW_IT_EXITS = {
    "recover_turns": [
        "with -v 0 nothing unless it interrupted one (a --dry-run always answers)",
        "Exit 0 when done, 2 on a usage error (a malformed --older-than), 3 when the database",
    ],
    "prune_idempotency_keys": [
        "with -v 0 nothing unless --dry-run (its count)",
        "Exit 0 when done, 2 on a usage error (a malformed --older-than, or one less than the "
        "promised lifetime, which is refused), 3 when the database",
    ],
    "purge_deleted_chats": [
        "with -v 0 nothing unless --dry-run (its counts)",
        "Exit 0 when done, 2 on a usage error (a malformed --older-than, or one under a day), 3 "
        "when the database",
    ],
    "forget_user": [
        "Prints one line (--dry-run: what it would do). Exit 0 when done, 1 when no user has "
        "that username, 2 on a usage error, 3 when the database",
    ],
    "export_user": [
        "(with --output, on stdout; with -v 0 nothing)",
        "Exit 0 when done, 1 when no user has that username or the file cannot be written, 2 on "
        "a usage error, 3 when the database",
    ],
    "seed_demo": [
        "unless told --allow-published-password: exit 1, nothing written",
        "with -v 0 only the creation of the demo user",
        "Exit 0 when done, 2 on a usage error, 3 when the database",
    ],
    "rollup_usage": [
        "(with -v 0, only a --dry-run's count); exit 0 when done, exit 2 on a usage error",
    ],
    "reconcile_usage": [
        "exit 0 when all agree, exit 1 on any drift, 2 on a usage error, 3 when the database",
        "With -v 0 it prints nothing unless something drifted",
        "--format json prints the same verdicts as one JSON object, whatever -v",
    ],
    "usage_month_totals": [
        "Reads only, on one snapshot: writes nothing. Prints to stdout.",
        "Exit 0 when done, 1 when no user has the --user username, 2 on a usage error",
    ],
    "set_model_alias": ["Prints the alias as set, with -v 0 too, and exits 0. A refused value"],
    "set_model_price": ["Prints the price as set, with -v 0 too, and exits 0. A refused value"],
}


def test_every_command_says_how_it_exits():
    assert set(SAYS_HOW_IT_EXITS) == {name for _, name in COMMANDS}


@pytest.mark.parametrize(("app", "name"), COMMANDS)
def test_a_description_gives_every_exit_code_and_what_v_0_prints(app, name):
    description = " ".join(parser_of(app, name).description.split())
    for says in SAYS_HOW_IT_EXITS[name]:
        assert says in description
