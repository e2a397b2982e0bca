from django.apps import AppConfig
from django.core import checks


class UsageConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "usage"

    def ready(self) -> None:
        from usage.checks import check_aliases_hold_no_credential

        checks.register(check_aliases_hold_no_credential, checks.Tags.security)
