"""The ASGI application production serves (`gunicorn --config gunicorn.conf.py`).

Everything a turn needs is loaded here, before the worker takes its first request: the URL
configuration with every view, litellm (seconds to import) with the demo provider, and the
database pool. The first turn on a fresh worker is as fast as the tenth.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")
django.setup(set_prefix=False)

# Both need the app registry ready.
from pantheon.threads import PantheonASGIHandler  # noqa: E402
from pantheon.warmup import warm_up  # noqa: E402

application = PantheonASGIHandler()

warm_up()
