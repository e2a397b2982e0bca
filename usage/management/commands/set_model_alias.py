from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand

from pantheon.commands import command_error
from usage.selectors import disabled_alias_effects
from usage.services import model_alias_set


class Command(BaseCommand):
    help = "Create or update a model alias (the model, endpoint and key an alias stands for)."

    def add_arguments(self, parser):
        parser.add_argument("alias")
        parser.add_argument("--model", dest="litellm_model", help="litellm model id")
        parser.add_argument("--api-base", dest="api_base")
        parser.add_argument("--api-key-env", dest="api_key_env", help="env var holding the key")
        parser.add_argument("--context-window", dest="context_window", type=int)
        parser.add_argument(
            "--max-output-tokens",
            dest="max_output_tokens",
            type=int,
            help="the most tokens an answer may take (less than the context window)",
        )
        toggle = parser.add_mutually_exclusive_group()
        toggle.add_argument("--enable", dest="enabled", action="store_true", default=None)
        toggle.add_argument("--disable", dest="enabled", action="store_false")

    def handle(self, *args, **options):
        try:
            row, created = model_alias_set(
                alias=options["alias"],
                litellm_model=options["litellm_model"],
                api_base=options["api_base"],
                api_key_env=options["api_key_env"],
                context_window=options["context_window"],
                max_output_tokens=options["max_output_tokens"],
                enabled=options["enabled"],
            )
        except ValidationError as exc:
            raise command_error(exc) from exc
        verb = "Created" if created else "Updated"
        state = "enabled" if row.enabled else "disabled"
        self.stdout.write(
            f"{verb} alias {row.alias}: {row.litellm_model} "
            f"(context {row.context_window}, answers up to {row.max_output_tokens}, {state}"
            + (f", key from ${row.api_key_env}" if row.api_key_env else "")
            + (f", base {row.api_base}" if row.api_base else "")
            + ")"
        )
        effects = None if row.enabled else disabled_alias_effects(row.alias)
        if effects:
            self.stderr.write(f"Warning: {effects}")
