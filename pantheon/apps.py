import logging

from django.apps import AppConfig
from django.conf import settings
from django.core import checks

from pantheon import logging_context
from pantheon.checks import check_cache_table, check_stale_limit

logger = logging.getLogger("pantheon")


class PantheonConfig(AppConfig):
    name = "pantheon"
    verbose_name = "Pantheon"

    def ready(self) -> None:
        logging_context.install_record_factory()
        checks.register(check_stale_limit)
        checks.register(check_cache_table)
        if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
            logger.warning(
                "Pantheon is running on SQLite, the embedded laptop default. "
                "Set DATABASE_URL=postgres://... for anything shared or in production."
            )
