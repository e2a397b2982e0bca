"""The user page shows where the user stands this month: credits, cap and billing status."""

from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.urls import reverse
from django.utils.html import format_html
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from pantheon.console import CREDITS, KeptWhileInUse, badge
from usage.rollups import today
from usage.selectors import billing_profile_for, ledger_names_user, month_credits, month_of

User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class PantheonUserAdmin(KeptWhileInUse, UserAdmin):
    billing_fields = ("month_credits", "credit_cap", "billing_status")
    readonly_fields = (*UserAdmin.readonly_fields, *billing_fields)

    def why_kept(self, user) -> str | None:
        # Asked before Django collects what the delete would take: for a user with many ledger
        # rows, collecting them to list them as protected took 20 s.
        if ledger_names_user(user.pk):
            return (
                "the usage ledger names them (their calls stay billed to them); untick Active "
                "to close the account instead."
            )
        return None

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        return (("Billing this month (UTC)", {"fields": self.billing_fields}), *fieldsets)

    @admin.display(description="credits this month")
    def month_credits(self, user) -> str:
        credits = month_credits(user=user)
        # The dashboard over this month's days, which is what the figure sums.
        month = {"start": month_of().isoformat(), "end": today().isoformat()}
        dashboard = (
            reverse("admin:billing") + "?" + urlencode({"user": user.get_username(), **month})
        )
        return format_html(
            '{} <a href="{}">open in the billing dashboard</a>',
            format(credits, CREDITS),
            dashboard,
        )

    @admin.display(description="monthly credit cap")
    def credit_cap(self, user) -> str:
        profile = billing_profile_for(user=user)
        if profile is None or profile.monthly_credit_cap is None:
            return "no cap"
        return format(profile.monthly_credit_cap, CREDITS)

    @admin.display(description="billing status")
    def billing_status(self, user) -> str:
        profile = billing_profile_for(user=user)
        if profile is not None and profile.is_suspended:
            return badge("bad", "suspended")
        return badge("ok", "active")


admin.site.unregister(TokenProxy)


@admin.register(TokenProxy)
class ApiTokenAdmin(TokenAdmin):
    """API tokens: whose exist and since when, never the secret (DRF's list showed every user's
    key in clear). Users get theirs from `POST auth/token`; an operator revokes one by deleting
    it, and adds none (a credential someone else has seen)."""

    list_display = ("user", "key_hint", "created")

    @admin.display(description="key")
    def key_hint(self, token) -> str:
        return f"{token.key[:4]}…"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
