"""gunicorn settings for production: `gunicorn --config gunicorn.conf.py` (also picked up from
the working directory by a plain `gunicorn`). Threads, because a turn spends most of its time
waiting on LLM providers."""

import multiprocessing
import os
import tempfile

wsgi_app = "pantheon.wsgi:application"
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# The gthread worker's heartbeat is not tied to one request, so a long turn is not killed; this
# bounds a worker that stops answering altogether.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5
accesslog = None if os.environ.get("GUNICORN_ACCESS_LOG") == "off" else "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# Each instance its own control socket (gunicorn's default path is shared by every instance of
# a user), or none: GUNICORN_CONTROL_SOCKET=off.
_control = os.environ.get("GUNICORN_CONTROL_SOCKET", "")
if _control == "off":
    control_socket_disable = True
else:
    control_socket = _control or os.path.join(
        tempfile.gettempdir(), f"pantheon-gunicorn-{bind.rsplit(':', 1)[1]}.ctl"
    )
