"""gunicorn's control socket (`gunicornc`): one per instance, by the port it listens on."""

import stat
from pathlib import Path

import pytest
from django.db import connection

from pantheon.testing.servers import AppServer, postgres_url


class BoundOnTheCommandLine(AppServer):
    """gunicorn started as `gunicorn --config gunicorn.conf.py --bind 127.0.0.1:PORT`, with no
    PORT, HOST nor GUNICORN_CONTROL_SOCKET in its environment, its temporary directory
    `tmp`."""

    def __init__(self, tmp: Path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tmp = tmp

    def environment(self) -> dict[str, str]:
        env = super().environment()
        for name in ("PORT", "HOST", "GUNICORN_CONTROL_SOCKET"):
            env.pop(name, None)
        return {**env, "TMPDIR": str(self.tmp)}

    def start(self, timeout: float = 60) -> AppServer:
        self.launch("--bind", f"127.0.0.1:{self.port}")
        self.wait_healthy(timeout)
        return self


def sockets_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if stat.S_ISSOCK(path.stat().st_mode))


@pytest.mark.django_db  # the test database, which the servers use, set up
def test_two_instances_bound_on_the_command_line_each_get_their_own_control_socket(tmp_path):
    """Two instances started with `--bind 127.0.0.1:8843` and `--bind 127.0.0.1:8844` both
    used `pantheon-gunicorn-8000.ctl` (the socket followed PORT, not the bind): the second
    took it from the first, and `gunicornc` reached only the second."""
    url = postgres_url(connection.settings_dict)
    first = BoundOnTheCommandLine(tmp_path, database_url=url)
    second = BoundOnTheCommandLine(tmp_path, database_url=url)
    with first, second:
        assert sockets_in(tmp_path) == sorted(
            [f"pantheon-gunicorn-{first.port}.ctl", f"pantheon-gunicorn-{second.port}.ctl"]
        )
