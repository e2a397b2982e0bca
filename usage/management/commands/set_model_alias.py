from django.core.exceptions import ValidationError

from pantheon.commands import ProjectCommand, command_error, whole_number
from usage.selectors import disabled_alias_effects
from usage.services import model_alias_set


class Command(ProjectCommand):
    requires_migrated_database = True  # pantheon.commands.ProjectCommand
    help = (
        "Create or update a model alias (the model, endpoint and key an alias stands for); "
        "options left out keep their value; texts are trimmed, as in the console. Prints the "
        "alias as set, with -v 0 too, and exits 0. A refused value exits 1, a malformed one 2, "
        "a database failure 3."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "alias",
            help="the name agents and clients use: letters, digits, '.', '_', '-' (a new one, "
            "or one to change; unlike any other but for case)",
        )
        parser.add_argument(
            "--model",
            dest="litellm_model",
            metavar="MODEL",
            help="litellm model id, e.g. openrouter/deepseek/deepseek-chat (required to create)",
        )
        parser.add_argument(
            "--api-base",
            dest="api_base",
            metavar="URL",
            help="the provider's URL (default: litellm's own)",
        )
        parser.add_argument(
            "--api-key-env",
            dest="api_key_env",
            metavar="VAR",
            help="name of the environment variable holding the key, ending in _API_KEY",
        )
        parser.add_argument(
            "--context-window",
            dest="context_window",
            metavar="TOKENS",
            type=whole_number,
            help="tokens the model takes, prompt and answer (at least 1024, and enough to leave "
            "the prompt 512 beside --max-output-tokens and the overhead)",
        )
        parser.add_argument(
            "--max-output-tokens",
            dest="max_output_tokens",
            metavar="TOKENS",
            type=whole_number,
            help="the most tokens an answer may take (less than the context window)",
        )
        toggle = parser.add_mutually_exclusive_group()
        toggle.add_argument(
            "--enable",
            dest="enabled",
            action="store_true",
            default=None,
            help="offer the alias to agents and turns (a new alias is enabled)",
        )
        toggle.add_argument(
            "--disable",
            dest="enabled",
            action="store_false",
            help="retire the alias: turns of agents on it are refused (model_alias_disabled)",
        )

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
