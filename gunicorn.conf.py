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
