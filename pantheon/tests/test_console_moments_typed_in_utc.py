"""A moment an operator types into the console (a price list's start, a user's dates) is read in
UTC, as every moment the console shows is, and its inputs say so: Django's labels ("Date:",
"Time:") named no zone, and an operator in Auckland who typed a price list's start for midnight
on the 1st had it take over 13 hours after their midnight."""

from datetime import UTC, datetime

import pytest
from django.contrib import admin
from django.contrib.admin.widgets import AdminSplitDateTime
from django.test import RequestFactory

from pantheon.console import MomentInput
from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for
from usage.models import PricingVersion

pytestmark = pytest.mark.django_db


def test_a_price_lists_start_is_typed_in_utc_and_its_inputs_say_so(staff):
    client = client_for(staff)
    page = client.get(url(PricingVersion, "add")).content.decode()
    assert "Date (UTC):" in page and "Time (UTC):" in page

    answer = client.post(
        url(PricingVersion, "add"),
        {
            "name": "New year",
            "default_multiplier": "1",
            "effective_from_0": "2027-01-01",
            "effective_from_1": "00:00:00",
            "prices-TOTAL_FORMS": "0",
            "prices-INITIAL_FORMS": "0",
            "_save": "Save",
        },
    )
    assert answer.status_code == 302, answer.content.decode()[:2000]
    starts = PricingVersion.objects.get(name="New year").effective_from
    assert starts == datetime(2027, 1, 1, tzinfo=UTC)


def test_a_users_dates_say_they_are_utc(staff):
    page = client_for(staff).get(url(type(staff), "change", staff.pk)).content.decode()
    assert page.count("Time (UTC):") == 2  # last login, date joined


def test_every_moment_the_console_takes_says_it_is_utc(staff):
    """Every page of every model the console registers: no date and time inputs that name no
    zone (a model admin added later with an editable moment needs `MOMENT_INPUTS`)."""
    request = RequestFactory().get("/admin/")
    request.user = staff
    unlabelled = []
    for model, model_admin in admin.site._registry.items():
        objects = [None, *model._default_manager.all()[:1]]
        for obj in objects:
            if obj is None and not model_admin.has_add_permission(request):
                continue  # a record: nothing is typed into its pages
            if obj is not None and not model_admin.has_change_permission(request, obj):
                continue
            form = model_admin.get_form(request, obj, change=obj is not None)
            for name, field in form.base_fields.items():
                widget = getattr(field.widget, "widget", field.widget)  # inside a wrapper
                if isinstance(widget, AdminSplitDateTime) and not isinstance(widget, MomentInput):
                    unlabelled.append(f"{model.__name__}.{name}")
    assert not unlabelled
