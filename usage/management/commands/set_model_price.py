from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from orchestration.metering import MULTIPLIER_FLOOR
from pantheon.commands import command_error
from usage.services import model_price_set

# A figure left out keeps its current value; `none` clears an optional one.
CLEAR = "none"


def _amount(text: str) -> Decimal | None:
    if text.lower() == CLEAR:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise CommandError(f"Not a decimal number: {text!r}") from exc
    if not value.is_finite():
        raise CommandError(f"Not a decimal number: {text!r}")
    return value


class Command(BaseCommand):
    help = (
        "Set a model alias's price (USD per million tokens) and credit multiplier in a price "
        "list: the active one, or --version NAME (created from the active one if missing, in "
        "force from now)."
    )

    def add_base_argument(self, parser, *args, **kwargs):
        # `--version` names a price list here, not Django's version.
        if "--version" not in args:
            super().add_base_argument(parser, *args, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("alias")
        parser.add_argument("--input", help="USD per million fresh input tokens")
        parser.add_argument(
            "--cached-input",
            help=f"USD per million cached input tokens ('{CLEAR}': charged as fresh input)",
        )
        parser.add_argument("--output", help="USD per million output tokens")
        parser.add_argument(
            "--credit-multiplier",
            help=f"credits multiplier of this alias ('{CLEAR}': the price list's default)",
        )
        parser.add_argument("--version", dest="version_name", help="price list name")

    def handle(self, *args, **options):
        given = {}
        for option, field in [
            ("input", "input_usd_per_mtok"),
            ("cached_input", "cached_input_usd_per_mtok"),
            ("output", "output_usd_per_mtok"),
            ("credit_multiplier", "credit_multiplier"),
        ]:
            if options[option] is not None:
                given[field] = _amount(options[option])
        for required in ("input_usd_per_mtok", "output_usd_per_mtok"):
            if required in given and given[required] is None:
                raise CommandError(f"--{required.split('_usd')[0]} cannot be cleared.")
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
        multiplier = str(in_force) + (" (list default)" if price.credit_multiplier is None else "")
        if in_force < MULTIPLIER_FLOOR:
            multiplier += f", billed at the floor x{MULTIPLIER_FLOOR}"
        self.stdout.write(
            f"{price.model_alias.alias} in {version.name!r}"
            + (" (new price list, in force from now)" if created else "")
            + f": input ${price.input_usd_per_mtok}/M, "
            + ("cached as input" if cached is None else f"cached ${cached}/M")
            + f", output ${price.output_usd_per_mtok}/M, credits x{multiplier}"
        )
