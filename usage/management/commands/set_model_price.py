import argparse
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from orchestration.metering import MULTIPLIER_FLOOR
from pantheon.commands import ProjectCommand, command_error
from pantheon.figures import AMOUNT_EXPECTED, typed_amount
from usage.selectors import price_list_superseded
from usage.services import model_price_set

# A figure left out keeps its current value; `none` clears an optional one.
CLEAR = "none"


def _amount(text: str) -> Decimal:
    """An argparse type: a plain number, as the console takes it (a bad one is a usage error,
    exit 2)."""
    try:
        return typed_amount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _amount_or_clear(text: str) -> Decimal | None:
    """An argparse type: a plain number, or `none` (None) to clear the figure."""
    if text.lower() == CLEAR:
        return None
    try:
        return typed_amount(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {AMOUNT_EXPECTED} or '{CLEAR}', not {text!r}"
        ) from None


class Command(ProjectCommand):
    requires_migrated_database = True  # pantheon.commands.ProjectCommand
    help = (
        "Set a model alias's price (USD per million tokens) and credit multiplier in a price "
        "list: the active one, or --version NAME (trimmed, as in the console; created from the "
        "active one if missing, in force from now). Prints the price as set, with -v 0 too, and "
        "exits 0. A refused value exits 1, a malformed one 2, a database failure 3. Warns (on "
        "stderr) when a list starting later, scheduled in the console, will take over from the "
        "list priced."
    )

    def add_base_argument(self, parser, *args, **kwargs):
        # `--version` names a price list here, not Django's version.
        if "--version" not in args:
            super().add_base_argument(parser, *args, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("alias", help="the model alias to price")
        # A figure left out is absent from the options (not None: `none` clears one).
        figure = {"default": argparse.SUPPRESS}
        parser.add_argument(
            "--input",
            type=_amount,
            metavar="USD",
            **figure,
            help="USD per million fresh input tokens",
        )
        parser.add_argument(
            "--cached-input",
            type=_amount_or_clear,
            metavar="USD",
            **figure,
            help=f"USD per million cached input tokens ('{CLEAR}': charged as fresh input)",
        )
        parser.add_argument(
            "--output", type=_amount, metavar="USD", **figure, help="USD per million output tokens"
        )
        parser.add_argument(
            "--credit-multiplier",
            type=_amount_or_clear,
            metavar="FACTOR",
            **figure,
            help=f"credits multiplier of this alias ('{CLEAR}': the price list's default)",
        )
        parser.add_argument(
            "--version",
            dest="version_name",
            metavar="NAME",
            help="price list name (default: the one in force; refused once ledger rows are "
            "stamped with it); a new name starts a copy of the one in force, in force at once "
            "(until a list scheduled after it starts: the command warns)",
        )

    def handle(self, *args, **options):
        given = {}
        for option, field, parse in [
            ("input", "input_usd_per_mtok", _amount),
            ("cached_input", "cached_input_usd_per_mtok", _amount_or_clear),
            ("output", "output_usd_per_mtok", _amount),
            ("credit_multiplier", "credit_multiplier", _amount_or_clear),
        ]:
            if option not in options:  # left out (argparse.SUPPRESS): keeps its value
                continue
            value = options[option]
            if isinstance(value, str):  # call_command(input="0.5") skips the parser's types
                try:
                    value = parse(value)
                except argparse.ArgumentTypeError as exc:
                    name = option.replace("_", "-")
                    raise CommandError(f"--{name}: {exc}", returncode=2) from None
            given[field] = value
        try:
            price, version, created = model_price_set(
                alias=options["alias"], version_name=options["version_name"], **given
            )
        except ValidationError as exc:
            raise command_error(exc) from exc
        cached = price.cached_input_usd_per_mtok
        in_force = (
            version.default_multiplier
            if price.credit_multiplier is None
            else price.credit_multiplier
        )
        multiplier = _plain(in_force) + (
            " (list default)" if price.credit_multiplier is None else ""
        )
        if in_force < MULTIPLIER_FLOOR:
            multiplier += f", billed at the floor x{MULTIPLIER_FLOOR}"
        # A list that starts after this one takes over from it: tomorrow's copy made in the
        # console supersedes a list started now, and this price stops applying then.
        superseded = price_list_superseded(version, price=price)
        until = (
            f" until {superseded.starts} UTC, when {superseded.successor.name!r} takes over"
            if superseded is not None and superseded.scheduled
            else ""
        )
        self.stdout.write(
            f"{price.model_alias.alias} in {version.name!r}"
            + (f" (new price list, in force from now{until})" if created else "")
            + f": input ${_plain(price.input_usd_per_mtok)}/M, "
            + ("cached as input" if cached is None else f"cached ${_plain(cached)}/M")
            + f", output ${_plain(price.output_usd_per_mtok)}/M, credits x{multiplier}"
        )
        if superseded is not None:
            advice = (
                f" To keep this price from then, set it in {superseded.successor.name!r} too "
                f"(--version {superseded.successor.name!r}), or move that list's start or "
                "delete it in the console."
                if superseded.scheduled
                else ""
            )
            self.stderr.write(f"Warning: {superseded.text}{advice}")


def _plain(value) -> str:
    """A figure as a price is written: 1000, 0.2 (not 1E+3, 0.200000)."""
    return f"{Decimal(value).normalize():f}"
