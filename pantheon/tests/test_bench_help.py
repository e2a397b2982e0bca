"""What the benchmarks' `--help` says of the database they are given (README, Benchmarks)."""

import subprocess
import sys

import pytest

from pantheon.testing.processes import ROOT


def database_url_help(script: str) -> str:
    shown = subprocess.run(
        [sys.executable, f"bench/{script}", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    return " ".join(shown.stdout.split())


def test_followers_help_says_a_database_not_named_as_scratch_is_used_in_place_and_kept():
    """Its --help said the database is made afresh and dropped, named *_bench; it uses any
    other as it is and keeps it (scratch_database(existing_ok=True)), as the README says."""
    shown = database_url_help("followers.py")

    assert (
        "the scratch database, made afresh and dropped after if its name ends in _bench, any "
        "other migrated in place and kept" in shown
    )


@pytest.mark.parametrize("script", ["turns.py", "ledger.py"])
def test_the_others_say_a_scratch_name_ends_in_bench(script):
    assert (
        "the scratch database, made afresh and dropped after (its name ends in _bench)"
        in database_url_help(script)
    )
