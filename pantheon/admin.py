"""The user page shows where the user stands this month (credits, cap, billing status) and
whether they hold an API token, which the users' list revokes."""

from decimal import Decimal
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.models import LogEntry
from django.contrib.admin.utils import flatten_fieldsets, unquote
from django.contrib.auth import forms as auth_forms
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.db.models.constants import LOOKUP_SEP
from django.forms import ModelForm
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import capfirst
from django.utils.translation import ngettext
from rest_framework.authtoken.models import Token, TokenProxy

from pantheon.console import (
    MOMENT_INPUTS,
    ChangesWithValues,
    KeptWhileInUse,
    moment,
    operator_may,
    record_links,
)
from pantheon.figures import counted, credits_text
from pantheon.passwords import api_token_revoke_logged
from sessions_app.models import Session, Turn
from usage.admin import EndsUsersRunningTurns, billing_status_badge, cap_shown
from usage.models import BillingProfile, LlmCallEvent
from usage.rollups import today
from usage.selectors import billing_profile_for, ledger_names_user, month_credits, month_of

User = get_user_model()
admin.site.unregister(User)
# DRF's token pages name a token by its key, in clear (title, breadcrumbs, history, delete
# page, admin log). Tokens are revoked from the users' list instead (`revoke_api_tokens`).
admin.site.unregister(TokenProxy)


class PasswordChangeForm(AdminPasswordChangeForm):
    """The user's password page. Setting a password revokes the API token (`pantheon.passwords`);
    turning password login off, the operator's answer to a leaked password, revokes it too,
    although Django does not count it as a password change."""

    def save(self, commit=True):
        user = super().save(commit=commit)
        if commit and not user.has_usable_password():
            api_token_revoke_logged(user=user, why="password login turned off")
        return user


class UserChangeForm(auth_forms.UserChangeForm):
    """The user's page refuses a username another user has in another case, as the add form
    does (`UserCreationForm`; both read it NFKC-normalized): a rename to "Bob" beside "bob"
    made two accounts that log in apart and share one count of failed logins
    (`pantheon.throttling`, which folds case)."""

    def clean_username(self):
        username = self.cleaned_data.get("username")
        twins = User.objects.filter(username__iexact=username).exclude(pk=self.instance.pk)
        if username and twins.exists():
            raise ValidationError(self.instance.unique_error_message(User, ["username"]))
        return username


# What an account may do in the console: staff and superuser status, roles and permissions.
PRIVILEGE_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")
# What happened to the account (its sign-ins, its creation), which Django writes: whoever else
# may change users rewrote when a customer last signed in, or joined.
RECORD_FIELDS = ("last_login", "date_joined")


def may_manage(operator, user) -> bool:
    """Whether `operator`, who may change users, may change `user`'s account (its password,
    token, activity, names): a superuser any; anyone else their own and those of accounts
    without console access. Django let whoever may change users reset a superuser's or an
    Owner's password, or tick Superuser status on their own page, and so take their console."""
    return (
        operator.is_superuser or operator.pk == user.pk or not (user.is_staff or user.is_superuser)
    )


def may_set_password(operator, user) -> bool:
    """Whether `operator` may set `user`'s password: a superuser any, anyone else their own.
    Whoever sets a password knows it, and a support operator who reset a customer's password
    could sign in as them through the API and read every conversation of theirs (only the
    user's history said so). Others who may change the account turn password login off
    instead (`password_login_off`): the token goes with it, and no password anyone knows opens
    the account until a superuser sets one."""
    return operator.is_superuser or operator.pk == user.pk


# Why a password typed for another account is refused (the console's 403 says it).
SET_BY_SUPERUSER = (
    "Setting another account's password is a superuser's: whoever sets it knows it, and could "
    "sign in as them. Turn password login off instead; a superuser sets a new one."
)


@admin.register(User)
class PantheonUserAdmin(EndsUsersRunningTurns, ChangesWithValues, KeptWhileInUse, UserAdmin):
    form = UserChangeForm
    change_password_form = PasswordChangeForm
    formfield_overrides = MOMENT_INPUTS  # last login, date joined
    billing_fields = ("month_credits", "credit_cap", "billing_status", "api_token", "records")
    readonly_fields = (
        *UserAdmin.readonly_fields,
        *billing_fields,
        "api_token_since",
        "password_state",
        "password_login",
    )
    actions = ["revoke_api_tokens"]

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and (
            obj is None or may_manage(request.user, obj)
        )

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and (
            obj is None or may_manage(request.user, obj)
        )

    def user_change_password(self, request, id, form_url=""):
        """The password page: for one who may change the account but not set its password
        (`may_set_password`), a page that turns password login off, and nothing to type."""
        user = self.get_object(request, unquote(id))
        if (
            user is None
            or not self.has_change_permission(request, user)
            or may_set_password(request.user, user)
        ):
            return super().user_change_password(request, id, form_url)
        if request.method == "POST":
            return self.password_login_off(request, user)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Password login: {user.get_username()}",
            "opts": self.opts,
            "original": user,
        }
        return TemplateResponse(request, "admin/auth/user/password_login_off.html", context)

    def password_login_off(self, request, user):
        if request.POST.get("usable_password") != "false" or "unset-password" not in request.POST:
            raise PermissionDenied(SET_BY_SUPERUSER)
        if user.has_usable_password():
            form = self.change_password_form(user, {"usable_password": "false"})
            if not form.is_valid():  # nothing typed to refuse: a form with one choice
                raise PermissionDenied(SET_BY_SUPERUSER)
            form.save()
            self.log_change(request, user, "Turned password login off.")
            self.message_user(
                request,
                "Password login was turned off: their API token was revoked, and no password "
                "opens the account until a superuser sets one.",
                messages.SUCCESS,
            )
        else:
            self.message_user(request, "Password login was off already: nothing changed.")
        return HttpResponseRedirect(reverse("admin:auth_user_change", args=[user.pk]))

    def read_only_because(self, request, obj) -> str:
        if not may_manage(request.user, obj):  # made staff since the page was opened
            return "it is a staff account now, which only a superuser changes."
        return super().read_only_because(request, obj)

    def get_readonly_fields(self, request, obj=None):
        """Roles, permissions and staff or superuser status are a superuser's to give (or
        `createsuperuser` from a shell): whoever else may change users would give them to
        themselves. Nor do they rewrite when the account signed in last or joined."""
        fields = super().get_readonly_fields(request, obj)
        if request.user.is_superuser:
            return fields
        kept = (*PRIVILEGE_FIELDS, *RECORD_FIELDS)
        return (*fields, *(name for name in kept if name not in fields))

    def construct_change_message(self, request, form, formsets, add=False):
        """A change says from and to (a role or superuser status granted is what an audit looks
        for); an addition and the password page do not: the passwords typed are their fields."""
        if add or not isinstance(form, ModelForm):
            return admin.ModelAdmin.construct_change_message(self, request, form, formsets, add)
        return super().construct_change_message(request, form, formsets, add)

    def save_model(self, request, obj, form, change):
        """A user whose Active is unticked (the account closed) ends their running turns too,
        as their own cancel would (`turn_cancelled`): their token is refused from then on, so
        they could no longer stop a turn that went on spending (a provider call each seat).
        The token is revoked, in their history: ticked again, the account logs in for a new
        one, and a copy of the old one that leaked while it was closed opens nothing."""
        super().save_model(request, obj, form, change)
        if change and "is_active" in form.changed_data and not obj.is_active:
            api_token_revoke_logged(user=obj, why="the account was deactivated")
            self.end_running_turns(request, users=[obj.pk])

    def lookup_allowed(self, lookup, value, request=None):
        # Django lets a list filter on a related row's primary key through as if it were a
        # column of the user's own (`auth_token__key` as `auth_token_id`), and a token's primary
        # key is its secret: `?auth_token__key__startswith=` told who may only view users any
        # user's token, a digit at a time. Django's UserAdmin refuses `password` lookups alike.
        return lookup.split(LOOKUP_SEP, 1)[0] != "auth_token" and super().lookup_allowed(
            lookup, value, request
        )

    @admin.action(
        description="Revoke API tokens (they log in again for a new one)", permissions=["change"]
    )
    def revoke_api_tokens(self, request, queryset):
        # The accounts the operator may change (`may_manage`, asked of the database: the
        # selection may be every user); a staff account's token is a superuser's to revoke.
        if not request.user.is_superuser:
            staff = queryset.filter(Q(is_staff=True) | Q(is_superuser=True))
            staff = staff.exclude(pk=request.user.pk)
            if kept := staff.count():
                queryset = queryset.exclude(pk__in=staff.values("pk"))
                self.message_user(
                    request,
                    f"Left {counted(kept, 'staff account')} as they were: only a superuser "
                    "changes those.",
                    messages.WARNING,
                )
        tokens = Token.objects.filter(user__in=queryset).select_related("user")
        revoked = [token.user for token in tokens]
        tokens.delete()
        for user in revoked:
            self.log_change(request, user, "Revoked the API token.")
        if revoked:
            said = ngettext(
                "Revoked the API token of %(count)s user.",
                "Revoked the API tokens of %(count)s users.",
                len(revoked),
            )
            self.message_user(request, said % {"count": f"{len(revoked):,}"}, messages.SUCCESS)
        else:
            self.message_user(request, "Nothing changed: none of them had an API token.")

    @admin.display(description="their records")
    def records(self, user) -> str:
        return record_links({"username": user.get_username()}, [Session, Turn, LlmCallEvent])

    @admin.display(description="API token")
    def api_token(self, user) -> str:
        since = _token_since(user)
        return "none" if since is None else f"{since} (revoke it from the users' list)"

    @admin.display(description="API token")
    def api_token_since(self, user) -> str:
        """The token without the way to revoke it, for who may not (the users' list offers
        them no action)."""
        return _token_since(user) or "none"

    _OR_FORGET = ", or run manage.py forget_user for one who asked to be forgotten"

    def why_kept(self, user) -> str | None:
        # Asked before Django collects what the delete would take: for a user with many ledger
        # rows, collecting them to list them as protected took 20 s.
        if ledger_names_user(user.pk):
            return (
                "the usage ledger names them (their calls stay billed to them); untick Active "
                f"to close the account instead{self._OR_FORGET}."
            )
        if _acted_in_console(user):
            return (
                "the admin log names them as who made changes (deleting them would delete "
                "those entries from the history of what they changed); untick Active to close "
                f"the account instead{self._OR_FORGET}."
            )
        return None

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        # Django names a row no admin shows by its `str`, and a token's is its key: the list
        # says the user holds one, not what it is (on the user's delete page and the bulk
        # action's alike).
        keys = Token.objects.filter(user__in=objs).values_list("key", flat=True)
        named = capfirst(Token._meta.verbose_name)
        hidden = {f"{named}: {key}": f"{named}: (its key is not shown)" for key in keys}
        # A billing profile refuses a delete of its own (`BillingProfileAdmin`: it would lift a
        # cap and a suspension unsaid), which Django takes for a permission the user's delete
        # lacks: a profile goes with its user, as the database deletes it.
        perms_needed = perms_needed - {BillingProfile._meta.verbose_name}
        return _renamed(deleted, hidden), counts, perms_needed, protected

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        billing = self.billing_fields
        swap = {}
        if not self.has_change_permission(request, obj):
            # Django's password box offers a reset, which is a 403 to whoever may not change
            # users (Owners, Analysts): they read whether a password is set instead.
            swap = {"password": "password_state"}
        elif not may_set_password(request.user, obj):
            # Nor may who changes a customer's account set its password: they turn it off.
            swap = {"password": "password_login"}
        if swap:
            fieldsets = [
                (name, {**options, "fields": [swap.get(f, f) for f in options["fields"]]})
                for name, options in fieldsets
            ]
        if not self.has_change_permission(request, obj):
            # Nor may they revoke its token: the users' list has no action for them (or
            # leaves a staff account's token to a superuser).
            billing = tuple("api_token_since" if f == "api_token" else f for f in billing)
        # The month's credits are the ledger's (or its monthly counters'), the cap and the
        # status the billing profile's: shown to who may read those, where a support operator
        # who may view users alone read every customer's spending and cap.
        user = request.user
        reads = {
            "month_credits": user.has_perm("usage.view_llmcallevent")
            or user.has_perm("usage.view_monthlyusage"),
            "credit_cap": user.has_perm("usage.view_billingprofile"),
            "billing_status": user.has_perm("usage.view_billingprofile"),
        }
        billing = tuple(f for f in billing if reads.get(f, True))
        return (("Billing this month (UTC)", {"fields": billing}), *fieldsets)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is not None and not self.has_change_permission(request, obj):
            # Read-only, the page shows values: the inputs' help ("Required. 150 characters or
            # fewer...", "Unselect this instead of deleting accounts.") is for who edits them.
            fields = flatten_fieldsets(self.get_fieldsets(request, obj))
            kwargs["help_texts"] = dict.fromkeys(fields, "")
        return super().get_form(request, obj, change=change, **kwargs)

    @admin.display(description="password")
    def password_state(self, user) -> str:
        state = "set" if user.has_usable_password() else "not set"
        return f"{state} (only who may change users can reset it)"

    @admin.display(description="password")
    def password_login(self, user) -> str:
        if not user.has_usable_password():
            return "not set: password login is off (only a superuser sets a password)"
        return format_html(
            'set <a class="button" href="{}">Turn password login off</a> (a leaked password: '
            "their API token goes with it; only a superuser sets a password)",
            reverse("admin:auth_user_password_change", args=[user.pk]),
        )

    def _month_credits(self, user) -> Decimal:
        # Read once for the page: the figure and the billing status both show it.
        if not hasattr(user, "_month_credits"):
            user._month_credits = month_credits(user=user)
        return user._month_credits

    @admin.display(description="credits this month")
    def month_credits(self, user) -> str:
        credits = self._month_credits(user)
        if not operator_may("usage.view_llmcallevent"):  # the dashboard is a 403 to them
            return credits_text(credits)
        # The dashboard over this month's days, which is what the figure sums.
        month = {"start": month_of().isoformat(), "end": today().isoformat()}
        dashboard = (
            reverse("admin:billing") + "?" + urlencode({"user": user.get_username(), **month})
        )
        return format_html(
            '{} <a href="{}">open in the billing dashboard</a>',
            credits_text(credits),
            dashboard,
        )

    @admin.display(description="monthly credit cap")
    def credit_cap(self, user) -> str:
        profile = billing_profile_for(user=user)
        return cap_shown(None if profile is None else profile.monthly_credit_cap)

    @admin.display(description="billing status")
    def billing_status(self, user) -> str:
        return billing_status_badge(billing_profile_for(user=user), self._month_credits(user))


admin.site.unregister(Group)


@admin.register(Group)
class PantheonGroupAdmin(GroupAdmin):
    """A group's permissions, as a user's, are a superuser's to give: an operator who may change
    groups gave their own group (a role they hold) the permissions it lacked."""

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        if request.user.is_superuser or "permissions" in fields:
            return fields
        return (*fields, "permissions")


def _acted_in_console(user) -> bool:
    """Whether admin log entries name `user` as who made a change to anything but their own
    account (Django deletes a user's entries with the user). An entry the account wrote of
    itself is a change made outside the console (`pantheon.passwords`): it goes with it."""
    own = {"content_type": ContentType.objects.get_for_model(User), "object_id": str(user.pk)}
    return LogEntry.objects.filter(user_id=user.pk).exclude(**own).exists()


def _renamed(nested: list, names: dict[str, str]) -> list:
    """Django's nested list of what a delete takes, each line found in `names` replaced."""
    return [
        _renamed(item, names) if isinstance(item, list) else names.get(item, item)
        for item in nested
    ]


def _token_since(user) -> str | None:
    """Since when the user holds an API token, or None."""
    token = Token.objects.filter(user=user).only("created").first()
    return None if token is None else f"since {moment(token.created)} UTC"
