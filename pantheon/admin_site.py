"""The operator console: Django's admin, branded Pantheon, with the billing dashboard in it."""

import functools

from django.contrib import admin
from django.contrib.admin import helpers, widgets
from django.contrib.admin.exceptions import DisallowedModelAdminToField
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import TO_FIELD_VAR
from django.contrib.admin.views.autocomplete import AutocompleteJsonView
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.template.response import SimpleTemplateResponse, TemplateResponse
from django.urls import path, reverse

from pantheon import logging_context
from pantheon.console import (
    CheckedLists,
    KindSaidOnce,
    RecordAdmin,
    TitledAsSaved,
    may_open,
    named,
    related,
    serving,
)
from pantheon.exceptions import query_has_unrenderable
from pantheon.figures import counted
from pantheon.passwords import console_operator
from pantheon.throttling import LoginAttempt


class ConsoleLoginForm(AdminAuthenticationForm):
    """The console's login, under the limits of `POST auth/token` (`pantheon.throttling`): it
    took any number of guesses at an operator's password. Checked before the password is; a
    login that goes through counts for none, as at the API, and so does a post that leaves a
    field empty (Django then checks no password)."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "throttled": "Too many login attempts for this account or from this address. Try "
        "again in %(seconds)s.",
    }
    retry_after: int | None = None

    def clean(self):
        attempt = LoginAttempt(self.request)
        self.retry_after = attempt.check()
        if self.retry_after is not None:
            raise ValidationError(
                self.error_messages["throttled"],
                code="throttled",
                params={"seconds": counted(self.retry_after, "second")},
            )
        cleaned = super().clean()  # a wrong password (or no staff account) raises: a failure
        if self.user_cache is None or self._errors:
            # Django checks no password when a field is missing (an empty password, no
            # username) and says so only in that field's error: no failure, and no login.
            attempt.release()
        else:
            attempt.succeeded(self.user_cache)
        return cleaned


class PantheonAdminSite(admin.AdminSite):
    site_header = "Pantheon"
    site_title = "Pantheon"
    index_title = "Operator console"
    # No user-facing site to go back to (clients use the API; `/` is a 404): no "View site".
    site_url = None
    # The lists need the width at 1400 px; the index and the breadcrumbs lead everywhere.
    enable_nav_sidebar = False
    login_form = ConsoleLoginForm

    def login(self, request, extra_context=None):
        """A refused attempt is a 429 with `Retry-After`, as the API's, its page saying why."""
        response = super().login(request, extra_context)
        form = (getattr(response, "context_data", None) or {}).get("form")
        wait = getattr(form, "retry_after", None)
        if wait is not None:
            response.status_code = 429
            response["Retry-After"] = str(wait)
        return response

    def register(self, model_or_iterable, admin_class=None, **options):
        """Every list of the console refuses a date no calendar holds as an invalid filter
        (`pantheon.console.CheckedLists`), every refused change page is titled by its row as
        saved (`TitledAsSaved`), and the message after a save names a row whose name says its
        kind without saying the kind twice (`KindSaidOnce`), whichever app registers it."""
        admin_class = admin_class or admin.ModelAdmin
        missing = tuple(
            base
            for base in (CheckedLists, TitledAsSaved, KindSaidOnce)
            if not issubclass(admin_class, base)
        )
        if missing:
            admin_class = type(
                admin_class.__name__,
                (*missing, admin_class),
                {"__module__": admin_class.__module__, "__doc__": admin_class.__doc__},
            )
        super().register(model_or_iterable, admin_class, **options)

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
        """Every console page refuses what no row can match with a 400, in one place: a query
        string holding a NUL (or a lone surrogate), which PostgreSQL refuses in a query (any list
        filter, search box or dashboard field that passed one on was a 500), and a list action
        whose selection holds a value that is no id of the list's rows (Django filtered by it and
        failed). Its log lines (the request's line too) name the operator, as the API's name
        their caller, and so does the history of an API token its password change revokes
        (`pantheon.passwords`). Inside Django's own wrapper, so the login redirect, never_cache
        and CSRF apply first."""

        @functools.wraps(view)
        def checked(request, *args, **kwargs):
            logging_context.bind(user_id=request.user.pk)
            if query_has_unrenderable(request.GET):
                return self.bad_request(request, "nul")
            if not selection_is_ids(view, request):
                return self.bad_request(request, "selection")
            refuse_related_to_field(view, request)
            with console_operator(request.user), serving(request, self):
                response = view(request, *args, **kwargs)
                if isinstance(response, SimpleTemplateResponse):
                    # Rendered while the page is served: the rows it names are named for who
                    # reads them (`pantheon.console.related`).
                    response.render()
                return response

        return super().admin_view(checked, cacheable)

    def autocomplete_view(self, request):
        return LabelledAutocomplete.as_view(admin_site=self)(request)

    def bad_request(self, request, reason: str) -> TemplateResponse:
        context = {**self.each_context(request), "title": "Bad request", "reason": reason}
        return TemplateResponse(request, "admin/bad_request.html", context, status=400)

    def permission_denied(self, request, exception) -> TemplateResponse:
        """The console's 403 (`pantheon.error_views.permission_denied`): what the operator's
        role may not do there and what it may, with a way back; it was Django's bare "403
        Forbidden"."""
        model_admin = getattr(getattr(request.resolver_match, "func", None), "model_admin", None)
        context = {
            **self.each_context(request),
            "title": "Not allowed",
            "refused": _refused(request, model_admin),
            "why": str(exception),
            "roles": operator_roles(request.user),
            "records": isinstance(model_admin, RecordAdmin),
            "back": None,
        }
        if model_admin is not None and model_admin.has_view_permission(request):
            opts = model_admin.opts
            context["back"] = (
                reverse(f"{self.name}:{opts.app_label}_{opts.model_name}_changelist"),
                f"Back to the {opts.verbose_name_plural}",
            )
        response = TemplateResponse(request, "admin/forbidden.html", context, status=403)
        return response.render()


def _related_field(self, remote_field, remote_obj) -> str:
    """A read-only relation on a console page (a ledger row's session, a turn's session, a
    billing profile's user), linked only for who may open the row's page, and named by its
    kind and id for who may not read its name (a session's title, a room's name). Django
    linked every one and named it by its title, whoever read it: a ledger reader who may not
    view sessions read the chats' titles, and the link answered 403."""
    return related(remote_obj)


def _raw_id_label(self, value):
    """The name beside a relation's id box (an agent's owner), as `_related_field` shows it."""
    label, url = _django_raw_id_label(self, value)
    if not url:
        return label, url
    obj = self.rel.model._default_manager.using(self.db).filter(
        **{self.rel.get_related_field().name: value}
    )
    found = obj.first()
    if found is None or may_open(type(found), found):
        return label, url
    return named(found), ""


_django_raw_id_label = widgets.ForeignKeyRawIdWidget.label_and_url_for_value
helpers.AdminReadonlyField.get_admin_url = _related_field  # type: ignore[method-assign]
widgets.ForeignKeyRawIdWidget.label_and_url_for_value = _raw_id_label  # type: ignore[method-assign]


# What each console role may do (the groups the migrations create), as the README says it.
ROLES = {
    "Owner": "changes configuration (model aliases, prices, billing profiles, rooms, agents) "
    "and may delete sessions, never records",
    "Analyst": "sees everything, the billing dashboard and its export included, and changes "
    "nothing",
}


def operator_roles(user) -> list[tuple[str, str]]:
    """The console roles `user` holds, each with what it may do; a superuser's first."""
    roles = [("superuser", "may do everything the console offers")] if user.is_superuser else []
    held = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    return roles + [(name, says) for name, says in ROLES.items() if name in held]


def _refused(request, model_admin) -> str:
    """What the page refused, in words: "add rooms", "change the ledger events"."""
    if model_admin is None:
        return "open this page"
    plural = model_admin.opts.verbose_name_plural
    view = (request.resolver_match.url_name or "").rpartition("_")[2]
    posted = request.method == "POST"
    if view == "add":
        return f"add {plural}"
    if view == "delete":
        return f"delete {plural}"
    if view == "history":
        return f"see the history of {plural}"
    if view in ("change", "changelist") and posted:
        return f"change {plural}"
    return f"see {plural}"


class LabelledAutocomplete(AutocompleteJsonView):
    """Django's autocomplete, with each row named by its admin's `autocomplete_label` where it
    has one (agents: every owner's "Ada (@ada)" read alike)."""

    def serialize_result(self, obj, to_field_name):
        result = super().serialize_result(obj, to_field_name)
        label = getattr(self.model_admin, "autocomplete_label", None)
        return result if label is None else {**result, "text": label(obj)}


def refuse_related_to_field(view, request) -> None:
    """Django's 400 for a `_to_field` that names a relation from another model (the users'
    `?_to_field=auth_token`, an agent's `?_to_field=seats`): Django's own check read a field
    attribute such relations lack (a 500) where it refuses any other field no list may pick."""
    model_admin = getattr(view, "__self__", None)
    to_field = request.POST.get(TO_FIELD_VAR, request.GET.get(TO_FIELD_VAR))
    if not to_field or not isinstance(model_admin, admin.ModelAdmin):
        return
    try:
        field = model_admin.opts.get_field(to_field)
    except FieldDoesNotExist:
        return  # Django refuses it itself
    if not field.concrete:
        raise DisallowedModelAdminToField(f"The field {to_field} cannot be referenced.")


def selection_is_ids(view, request) -> bool:
    """Whether an action posted to a list selects its rows by ids of the list's model. The
    list's view is the model admin's bound `changelist_view`; a form leaves out no value that a
    hand-made or tampered post can send ("abc" on an integer key, "" on a UUID)."""
    model_admin = getattr(view, "__self__", None)
    if request.method != "POST" or not isinstance(model_admin, admin.ModelAdmin):
        return True
    key = model_admin.model._meta.pk
    try:
        for value in request.POST.getlist(ACTION_CHECKBOX_NAME):
            key.to_python(value)
    except ValidationError:
        return False
    return True
