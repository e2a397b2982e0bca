"""`make run`'s server: uvicorn alone, one process, serving the app with the production
worker's HTTP protocol (`pantheon.protocol`: a deadline to send a request, a timeout to read the
answer, no `100 Continue` for a body announced too large). uvicorn's command line only names
its own protocols, so the laptop server had none of these.

    python -m pantheon.serve [--host 127.0.0.1] [--port 8000]

Otherwise as `uvicorn pantheon.asgi:application --lifespan off --no-proxy-headers`: Django has
no lifespan events, and the app reads forwarded headers itself (PANTHEON_NUM_PROXIES).
"""

from __future__ import annotations

import argparse

import uvicorn

APP = "pantheon.asgi:application"
PROTOCOL = "pantheon.protocol:PantheonHttpProtocol"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pantheon.serve",
        description="Serve Pantheon with uvicorn and the production worker's HTTP protocol.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    options = parser.parse_args(argv)
    # uvicorn.run loads the app before its event loop starts, as the command line does: the
    # app's warm-up (pantheon.asgi) runs a loop of its own.
    uvicorn.run(
        APP,
        host=options.host,
        port=options.port,
        http=PROTOCOL,
        lifespan="off",
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
