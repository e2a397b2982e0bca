"""The gunicorn worker class that serves Pantheon's ASGI application (`gunicorn.conf.py`)."""

from uvicorn_worker import UvicornWorker


class PantheonWorker(UvicornWorker):
    # uvloop and httptools: the fast event loop and HTTP parser. Django has no lifespan events.
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "lifespan": "off"}
