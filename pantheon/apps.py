import logging

from django.apps import AppConfig
from django.conf import settings
from django.contrib.admin.apps import AdminConfig
from django.contrib.auth import get_user_model
from django.core import checks
from django.db.backends.signals import connection_created
from django.db.models.signals import post_save

from pantheon import converters, logging_context
from pantheon.checks import (
    check_cache_table,
    check_guessable_secrets,
    check_password_change_revokes_tokens,
    check_published_demo_password,
    check_sections_fit_the_pool,
    check_security_middleware,
    check_settings_of_subclassed_middleware,
    check_stale_limit,
)
from pantheon.db import (
    cache_statement_conversions,
    install_pool_check,
    install_replanning,
    load_timestamps_in_c,
)

logger = logging.getLogger("pantheon")


class PantheonAdminConfig(AdminConfig):
    """Django's admin with Pantheon's site (branding, the billing dashboard) as the default."""

    default_site = "pantheon.admin_site.PantheonAdminSite"


class PantheonConfig(AppConfig):
    name = "pantheon"
    verbose_name = "Pantheon"

    def ready(self) -> None:
        converters.register()  # before any URLconf is read
        logging_context.install_record_factory()
        # Python's warnings are log records (logger `py.warnings`, through the root's handler):
        # written by the warnings module, they were plain lines on stderr among the JSON ones.
        logging.captureWarnings(True)
        checks.register(check_stale_limit)
        checks.register(check_security_middleware, checks.Tags.security, deploy=True)
        checks.register(check_settings_of_subclassed_middleware, checks.Tags.security, deploy=True)
        checks.register(check_cache_table)
        checks.register(check_sections_fit_the_pool)
        checks.register(check_password_change_revokes_tokens, checks.Tags.security)
        checks.register(check_published_demo_password, checks.Tags.security, deploy=True)
        checks.register(check_guessable_secrets, checks.Tags.security)
        connection_created.connect(install_replanning, dispatch_uid="pantheon-replanning")
        connection_created.connect(install_pool_check, dispatch_uid="pantheon-pool-check")
        cache_statement_conversions()
        load_timestamps_in_c()
        # Models are loaded only now: the module imports the token's.
        from pantheon.passwords import revoke_api_token_on_unsaved_password_stored

        post_save.connect(
            revoke_api_token_on_unsaved_password_stored,
            sender=get_user_model(),
            dispatch_uid="pantheon-unsaved-password",
        )
        if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
            logger.warning(
                "Pantheon is running on SQLite, the embedded laptop default. "
                "Set DATABASE_URL=postgres://... for anything shared or in production."
            )
