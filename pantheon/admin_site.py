"""The operator console: Django's admin, branded Pantheon, with the billing dashboard in it."""

import functools

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path

from pantheon import logging_context
from pantheon.exceptions import query_has_unrenderable


class PantheonAdminSite(admin.AdminSite):
    site_header = "Pantheon"
    site_title = "Pantheon"
    index_title = "Operator console"
    # No user-facing site to go back to (clients use the API; `/` is a 404): no "View site".
    site_url = None
    # The lists need the width at 1400 px; the index and the breadcrumbs lead everywhere.
    enable_nav_sidebar = False

    def get_urls(self):
        from usage import admin_views

        billing = [
            path(
                "billing/",
                self.admin_view(admin_views.BillingDashboardView.as_view(site=self)),
                name="billing",
            ),
            path(
                "billing/export.csv",
                self.admin_view(admin_views.BillingExportView.as_view(site=self)),
                name="billing_export",
            ),
        ]
        return billing + super().get_urls()

    def admin_view(self, view, cacheable=False):
        """Every console page refuses a query string holding a NUL (or a lone surrogate) with a
        400, in one place: PostgreSQL refuses such a text in a query, and any list filter, search
        box or dashboard field that passed one on was a 500. Its log lines (the request's line
        too) name the operator, as the API's name their caller. Inside Django's own wrapper, so
        the login redirect, never_cache and CSRF apply first."""

        @functools.wraps(view)
        def checked(request, *args, **kwargs):
            logging_context.bind(user_id=request.user.pk)
            if query_has_unrenderable(request.GET):
                context = {**self.each_context(request), "title": "Bad request"}
                return TemplateResponse(request, "admin/bad_request.html", context, status=400)
            return view(request, *args, **kwargs)

        return super().admin_view(checked, cacheable)
