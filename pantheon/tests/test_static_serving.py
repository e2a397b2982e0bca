"""Production serving: with DEBUG off the app serves its own static files (WhiteNoise, after
collectstatic), and Swagger UI loads nothing from a CDN."""

import re

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client, override_settings


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
