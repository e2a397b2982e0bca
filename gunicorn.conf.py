"""gunicorn settings for production: `gunicorn pantheon.wsgi` picks this file up from the
working directory. Threads, because a turn spends most of its time waiting on LLM providers."""

import multiprocessing
import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# The gthread worker's heartbeat is not tied to one request, so a long turn is not killed; this
# bounds a worker that stops answering altogether.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")


def on_starting(server):
    """Collect static files before the workers start, so WhiteNoise serves the admin's CSS and
    Swagger UI's assets with DEBUG off however the server was launched. Idempotent."""
    import subprocess
    import sys
    from pathlib import Path

    manage = Path(__file__).resolve().parent / "manage.py"
    subprocess.run(
        [sys.executable, str(manage), "collectstatic", "--noinput", "-v", "0"], check=True
    )
