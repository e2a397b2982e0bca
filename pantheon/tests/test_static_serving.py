"""Production serving: with DEBUG off the app serves its own static files (WhiteNoise, after
collectstatic), and Swagger UI loads nothing from a CDN."""

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings

from pantheon.testing.processes import run_production
from pantheon.testing.servers import (
    ROOT,
    AppServer,
    free_port,
    json_objects,
    postgres_url,
    wait_healthy,
)


@pytest.fixture(scope="module")
def static_root(tmp_path_factory):
    """A STATIC_ROOT filled by collectstatic with the production storage, as gunicorn starts."""
    root = tmp_path_factory.mktemp("static")
    with override_settings(STATIC_ROOT=root, STORAGES=settings.PRODUCTION_STORAGES):
        call_command("collectstatic", "--noinput", verbosity=0)
    return root


@pytest.fixture
def collected(settings, static_root):
    settings.DEBUG = False
    settings.STATIC_ROOT = static_root
    settings.STORAGES = settings.PRODUCTION_STORAGES
    return static_root


def test_with_debug_off_the_admin_css_is_served(collected):
    client = Client()  # a new handler: WhiteNoise reads STATIC_ROOT as it starts

    response = client.get("/static/admin/css/base.css")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")
    body = b"".join(response.streaming_content)
    assert b"--body-bg" in body


@pytest.mark.django_db
def test_with_debug_off_admin_pages_link_hashed_assets_that_are_served(collected, staff):
    client = Client()
    client.force_login(staff)

    page = client.get("/admin/").content.decode()
    stylesheets = re.findall(r'href="(/static/[^"]+\.css)"', page)

    assert any(re.search(r"admin/css/base\.[0-9a-f]{12}\.css$", href) for href in stylesheets)
    assert any("pantheon/console." in href for href in stylesheets)
    for href in stylesheets:
        response = client.get(href)
        assert response.status_code == 200, href
        assert "max-age=315360000" in response["Cache-Control"]  # hashed: cached for good


@pytest.mark.django_db
def test_swagger_ui_references_only_local_assets(collected, client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    page = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any("swagger-ui-bundle" in asset for asset in assets)
    assert all(asset.startswith("/") and not asset.startswith("//") for asset in assets), assets
    assert "cdn." not in page and "https://" not in page.replace(settings.STATIC_URL, "")
    for asset in assets:
        if asset.startswith("/static/"):
            assert Client().get(asset).status_code == 200, asset


def _waits_for_the_lock(pid: int, inode: int) -> bool:
    """Whether process `pid`, or a process it started, is blocked on a lock of the file `inode`
    (/proc/locks marks a blocked request with "->"; the lock is taken in the process that
    collects, `pantheon.before_serving`)."""
    family = {str(pid), *(str(child) for child in _descendants(pid))}
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if (
            "->" in fields
            and family & set(fields)
            and any(field.endswith(f":{inode}") for field in fields)
        ):
            return True
    return False


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The parent is the second field after the command, which is in brackets.
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def test_an_instance_starting_while_another_collects_static_files_waits_for_it():
    """Instances of one checkout started together (each its port and control socket, as the
    README says) each collect static files into the same STATIC_ROOT before their workers
    start. Run at once, collectstatic deleted and rewrote the hashed files the other was
    reading, and an instance failed to start (FileNotFoundError on a hashed file: two of three
    tries of three instances started at once)."""
    # A database no server answers for (nothing listens on port 1): the start goes on without
    # checking its migrations, as it does in an outage (a database that does not exist stops it).
    env = AppServer(database_url="postgres://postgres@127.0.0.1:1/unused").environment()
    start_hook = "import runpy; runpy.run_path('gunicorn.conf.py')['on_starting'](None)"
    with open(ROOT / ".collectstatic.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another instance is collecting
        start = subprocess.Popen(
            [sys.executable, "-c", start_hook],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        inode = os.fstat(held.fileno()).st_ino
        deadline = time.monotonic() + 60
        while not _waits_for_the_lock(start.pid, inode):
            assert start.poll() is None, "it collected while the other instance was collecting"
            assert time.monotonic() < deadline, "it never waited for the lock"
            time.sleep(0.05)
    assert start.wait(120) == 0, start.stderr.read()[-500:]


def test_pantheon_serve_with_debug_off_collects_static_files_and_serves_docs_and_admin(
    tmp_path,
):
    """`python -m pantheon.serve` with DEBUG off collects static files before it serves, as
    gunicorn does. It did not: `/api/docs/` and `/admin/login/` were a 500 ("Missing
    staticfiles manifest entry for 'drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css'")
    until someone ran collectstatic; the client tester's catch. The production settings with a
    STATIC_ROOT of this test's own, empty as on a fresh checkout."""
    static_root = tmp_path / "static"
    (tmp_path / "serve_settings.py").write_text(
        f"from pantheon.settings import *  # noqa: F403\nSTATIC_ROOT = {str(static_root)!r}\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "serve_settings",
        "PYTHONPATH": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        "PANTHEON_LLM_BACKEND": "demo",
        "DEBUG": "false",
        "LOG_LEVEL": "ERROR",
    }
    # Migrated first: with DEBUG off it refuses a database that is not.
    migrated = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "pantheon.serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=log,
            stderr=log,
        )
    try:
        try:
            wait_healthy(url, server, timeout=60, name="pantheon.serve")
        except RuntimeError as error:
            raise AssertionError((tmp_path / "server.log").read_text()[-3000:]) from error

        assets = set()
        for page in ("/api/docs/", "/admin/login/"):
            response = httpx.get(f"{url}{page}", timeout=10)
            assert response.status_code == 200, (page, response.text[:300])
            assets |= set(re.findall(r'(?:src|href)="(/static/[^"]+)"', response.text))
        assert any("swagger-ui-dist/swagger-ui." in asset for asset in assets), assets
        assert any(re.search(r"admin/css/base\.[0-9a-f]{12}\.css$", a) for a in assets), assets
        for asset in sorted(assets):
            assert httpx.get(f"{url}{asset}", timeout=10).status_code == 200, asset
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(15)


@pytest.mark.django_db  # the test database, which the server uses, set up
def test_gunicorn_serves_static_files_with_every_log_line_json(tmp_path):
    """The first static file each worker served wrote two plain lines on stderr, among the JSON
    ones: Django's `Warning: StreamingHttpResponse must consume synchronous iterators in
    order to serve them asynchronously` and `  async for part in content:` (WhiteNoise streams
    a file through a sync iterator). Whole, in part, HEAD, or not modified."""
    log = tmp_path / "server.log"
    url = postgres_url(connection.settings_dict)
    plain = httpx.Client(headers={"Accept-Encoding": "identity"}, timeout=10)
    # At INFO, for the log to hold the server's own lines beside any warning's.
    served = AppServer(database_url=url, log_path=log, env={"LOG_LEVEL": "INFO"})
    with served as server, plain:
        page = httpx.get(f"{server.url}/admin/login/", timeout=10).text
        css = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page)[1]
        on_disk = (Path(settings.STATIC_ROOT) / css.removeprefix("/static/")).read_bytes()
        whole = plain.get(f"{server.url}{css}")
        part = plain.get(f"{server.url}{css}", headers={"Range": "bytes=10-19"})
        head = plain.head(f"{server.url}{css}")
        again = plain.get(f"{server.url}{css}", headers={"If-None-Match": whole.headers["ETag"]})
        compressed = httpx.get(f"{server.url}{css}", headers={"Accept-Encoding": "gzip"})
    assert (whole.status_code, whole.content) == (200, on_disk)
    assert (part.status_code, part.content) == (206, on_disk[10:20])
    assert (head.status_code, head.content) == (200, b"")
    assert (again.status_code, again.content) == (304, b"")
    assert compressed.headers["Content-Encoding"] == "gzip" and compressed.content == on_disk
    lines = json_objects(log.read_text().splitlines())  # each one a JSON object
    assert any(line["logger"] == "pantheon.warmup" for line in lines)  # the server's log
    assert not [line for line in lines if line["logger"] == "py.warnings"]


def test_a_python_warning_in_the_app_is_a_json_log_line():
    """Python's warnings went to stderr as the warnings module writes them (two plain lines);
    with LOG_FORMAT=json every line a server writes parses."""
    warned = run_production(
        [
            "-c",
            "import django, warnings; django.setup(); "
            "warnings.warn('something to say', UserWarning)",
        ],
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/unused",
        DEBUG="false",
        LOG_FORMAT="json",
    )

    assert warned.returncode == 0, warned.stderr
    lines = json_objects(warned.stderr.strip().splitlines())
    said = [line for line in lines if line["logger"] == "py.warnings"]
    assert len(said) == 1 and "UserWarning: something to say" in said[0]["message"]
    assert said[0]["level"] == "WARNING"
