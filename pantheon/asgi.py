"""The ASGI application production serves (`gunicorn --config gunicorn.conf.py`).

Everything a turn needs is loaded here, before the worker takes its first request: the URL
configuration with every view, litellm (seconds to import) with the demo provider, and the
database pool. The first turn on a fresh worker is as fast as the tenth.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")

application = get_asgi_application()

from pantheon.warmup import warm_up  # noqa: E402  (needs the app registry ready)

warm_up()
