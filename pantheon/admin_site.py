"""The operator console: Django's admin, branded Pantheon, with the billing dashboard in it."""

from django.contrib import admin
from django.urls import path


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
