from functools import cache

from django.contrib import admin, messages
from django.contrib.admin.views.main import ORDER_VAR
from django.db.models import Model, Q
from django.db.models.constants import LOOKUP_SEP
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from orchestration.routing import FALLBACK_REASONS
from pantheon.console import (
    ChangesWithValues,
    DeletedFilter,
    DrillDownChangeList,
    EditedAsShownAdmin,
    EitherEndPaginator,
    ReadOnlyRecords,
    RecordAdmin,
    RecordTabularInline,
    RecordValue,
    ShownMoments,
    SoftDeleteAdmin,
    badge,
    by_id_or_text,
    deleted,
    figure_column,
    moment,
    moment_column,
    name_column,
    named,
    operator_may,
    record_links,
    related,
    username_filter,
)
from pantheon.figures import credits_text
from rooms.admin import CheckedAsTheApi
from sessions_app.models import (
    IdempotencyKey,
    Message,
    Session,
    SessionQuerySet,
    SessionSummary,
    Turn,
    TurnContextAudit,
    TurnFailure,
    TurnStatus,
)
from sessions_app.serializers import SessionCreateSerializer
from sessions_app.services import session_delete
from usage.models import USAGE_TOTAL_FIELDS, LlmCallEvent
from usage.selectors import priced_or_none


def _in_a_deleted_room(session: Session | None) -> bool:
    return session is not None and session.room_id is not None and deleted(session.room)


def _deleted_moment(session: Session) -> str:
    """When the session was deleted, or its room ("… (its room)"): the API serves neither."""
    if session.deleted_at is None and _in_a_deleted_room(session):
        return f"{moment(session.room.deleted_at)} (its room)"
    return moment(session.deleted_at)


class SessionDeletedFilter(DeletedFilter):
    """A session in a deleted room is deleted too, as for the API (404, no more turns) and its
    own page ("Its room was deleted on ..."): "not deleted" lists the sessions the API serves
    (`Session.objects.alive()`), "deleted" the others, whichever of the two was deleted."""

    def get_lookup_condition(self):
        return SessionQuerySet.alive_q()


class TurnSessionDeletedFilter(DeletedFilter):
    """A turn's session deleted or not, as the sessions list's "deleted" filter says it (a
    session in a deleted room is deleted)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.title = "session deleted"

    def get_lookup_condition(self):
        return SessionQuerySet.alive_q(through="session__")


class SessionForm(CheckedAsTheApi):
    """A session's title as the API takes one (SessionCreateSerializer): trimmed, and empty when
    it holds nothing to see (zero-width characters, say), not a title no list can show."""

    api_serializer = SessionCreateSerializer
    api_checked = ("title",)

    class Meta:
        model = Session
        fields = ["title"]


# What the lists say of a direct session's agent once it was deleted (its history stays).
DELETED_AGENT = "(deleted agent)"


@admin.register(Session)
class SessionAdmin(ChangesWithValues, ShownMoments, EditedAsShownAdmin, SoftDeleteAdmin):
    form = SessionForm
    list_display = ["created", "starter", "room_name", "agent_name", "title", "deleted"]
    list_display_links = ["created"]
    created = moment_column()
    starter = name_column("started_by", "username", "started by")
    list_filter = [
        username_filter("started_by"),
        ("deleted_at", SessionDeletedFilter),
        "created_at",
    ]
    search_fields = ["id", "title", "room__name"]
    search_help_text = (
        "A session id (whole, or its first 8 characters as pages print it), or part of a "
        "title or room name."
    )
    list_select_related = ["room", "agent", "started_by"]
    # Who started a session and where are records: its turns and their ledger rows name them.
    # Only the title changes here.
    fields = [
        "id",
        "started_by",
        "room",
        "agent_shown",
        "title",
        "created_at",
        "deleted_at",
        "records",
    ]
    readonly_fields = [
        "id",
        "started_by",
        "room",
        "agent_shown",
        "created_at",
        "deleted_at",
        "records",
    ]
    ordering = ["-created_at"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # one session per conversation: as many as records
    # A page in the list's second half read from its far end (session_created, backwards), as
    # the records' lists are: the last of 50,000 sessions was an OFFSET of them all (0.9 s).
    paginator = EitherEndPaginator
    names_its_kind = True  # "Session “Roundtable demo” · e59bbb36…" (Session.__str__)
    # Named by its id to who may not view sessions (`pantheon.console.named`): a ledger row's
    # or a message's page named its session by its title.
    name_withheld = "title"

    @admin.display(description="room", ordering="room__name")
    def room_name(self, session: Session) -> str:
        return named(session.room) if session.room_id else self.get_empty_value_display()

    @admin.display(description="deleted (UTC)", ordering="deleted_at")
    def deleted(self, session: Session) -> str:
        return _deleted_moment(session)

    # A direct session whose agent was deleted keeps its history with no agent: it says so, as
    # the turns list does ("(deleted agent)"), where Django's column read "-" as for a room's.

    @admin.display(description="agent", ordering="agent__name")
    def agent_name(self, session: Session) -> str:
        if session.agent_id is not None:
            return str(session.agent)
        return self._no_agent(session)

    @admin.display(description="agent")
    def agent_shown(self, session: Session) -> str:
        """The page's: a link to the agent's page, as Django's read-only field gave."""
        if session.agent_id is None:
            return self._no_agent(session)
        return related(session.agent)

    def _no_agent(self, session: Session) -> str:
        return DELETED_AGENT if session.room_id is None else self.get_empty_value_display()

    def has_add_permission(self, request):
        # Users open sessions through the API (POST sessions); no operator workflow adds one.
        return False

    @admin.display(description="its records")
    def records(self, session: Session) -> str:
        records = [Turn, Message, LlmCallEvent, SessionSummary, TurnContextAudit]
        return record_links({"q": str(session.pk)}, records)

    soft_delete_effect = (
        "goes from the API at once (it answers 404 and takes no more turns; a turn still running "
        "ends as its user's cancel would end it) and stays here, marked deleted and read-only, "
        "with its turns and ledger rows."
    )

    def soft_delete(self, obj: Session) -> None:
        session_delete(session=obj)

    # A session in a deleted room is gone from the API as the room is: read-only here too.
    def has_change_permission(self, request, obj=None):
        return not _in_a_deleted_room(obj) and super().has_change_permission(request, obj)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if _in_a_deleted_room(obj) and obj.deleted_at is None:
            self.message_user(
                request,
                f"Its room was deleted on {moment(obj.room.deleted_at)} UTC: the session is gone "
                "from the API with it, and stays here, read-only, for its history.",
                messages.INFO,
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_search_results(self, request, queryset, search_term):
        text = Q(title__icontains=search_term.strip())
        if request.user.has_perm(VIEW_ROOMS):  # a match told the others a room's name
            text |= Q(room__name__icontains=search_term.strip())
        return by_id_or_text(queryset, search_term, ids=["pk"], text=text), False


# Who may read a conversation's words in the console: who may view its messages.
VIEW_MESSAGES = "sessions_app.view_message"
# Who may read a room's name, and an agent's role prompt.
VIEW_ROOMS = "rooms.view_room"
VIEW_AGENTS = "rooms.view_agent"
ROLE_PROMPT_WITHHELD = "withheld: only who may view agents reads a role prompt"
WITHHELD = "withheld: only who may view messages reads a conversation's words"


class Withheld:
    """A field that holds a conversation's words, on the page of one who may not read them:
    its label, and why its value is not shown (as `RecordValue` stands for a field)."""

    do_not_call_in_templates = True

    def __init__(self, name: str, label: str):
        self.__name__ = name
        self.short_description = label

    def __call__(self, obj) -> str:
        return WITHHELD

    def __str__(self) -> str:
        return self.__name__


@cache
def _withheld(model: type[Model], names: tuple[str, ...]) -> dict[str, Withheld]:
    # One object per field: the form's exclusions match them by identity.
    return {name: Withheld(name, model._meta.get_field(name).verbose_name) for name in names}


class ConversationWords:
    """Fields beside a conversation's messages that hold its words too (a turn's input, an
    Idempotency-Key's stored answer), shown only to who may view messages, as the turn page's
    messages are (Django shows an inline only to who may view its rows); to anyone else their
    label and `WITHHELD`. Their lists answer a filter on them only to them: one who may view
    turns but not messages read every question asked on the turns' pages, and
    `?user_input__icontains=` told them which turns said what."""

    conversation_fields: tuple[str, ...] = ()

    def _withheld_for(self, request) -> dict[str, Withheld]:
        if request.user.has_perm(VIEW_MESSAGES):
            return {}
        return _withheld(self.model, self.conversation_fields)  # type: ignore[attr-defined]

    def _swapped(self, request, names) -> list:
        withheld = self._withheld_for(request)
        return [withheld.get(name, name) if isinstance(name, str) else name for name in names]

    def get_fields(self, request, obj=None):
        return self._swapped(request, super().get_fields(request, obj))  # type: ignore[misc]

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)  # type: ignore[misc]
        return self._swapped(request, fields)

    def get_exclude(self, request, obj=None):
        excluded = super().get_exclude(request, obj) or ()  # type: ignore[misc]
        withheld = list(self._withheld_for(request).values())
        return [*excluded, *withheld] or None

    def lookup_allowed(self, lookup, value, request=None):
        field = lookup.split(LOOKUP_SEP, 1)[0]
        if field in self.conversation_fields and (
            request is None or not request.user.has_perm(VIEW_MESSAGES)
        ):
            return False
        return super().lookup_allowed(lookup, value, request)  # type: ignore[misc]


class MessageInline(RecordTabularInline):
    model = Message
    fields = ["sequence", "role", "agent_key", "model_alias", "status", "error_code", "content"]
    readonly_fields = fields
    ordering = ["sequence"]
    show_change_link = False


class LlmCallEventInline(RecordTabularInline):
    model = LlmCallEvent
    verbose_name = "ledger event"
    verbose_name_plural = "ledger events"
    fields = [
        "created_at",
        "purpose",
        "agent_key",
        "model_alias",
        "status",
        "input_tokens_fresh",
        "input_tokens_cached",
        "output_tokens",
        "credits",
        "provider_cost_usd",
        "priced_flag",
        "latency_ms",
    ]
    readonly_fields = fields
    ordering = ["created_at"]

    @admin.display(description="priced", boolean=True)
    def priced_flag(self, event: LlmCallEvent) -> bool | None:
        return priced_or_none(event)


class TurnContextAuditInline(ReadOnlyRecords, admin.StackedInline):
    model = TurnContextAudit
    extra = 0
    can_delete = False


class EndedBy(RecordValue):
    """A turn's "ended by" on its page. A running turn has not ended: its failure code is empty
    until it does, as that of a turn that ran to its end, and its page said "ran to its end"."""

    def __call__(self, turn: Turn) -> str:
        if turn.status == TurnStatus.RUNNING:
            return "still running"
        return turn.get_failure_code_display()


class EndedByFilter(admin.ChoicesFieldListFilter):
    """ "ran to its end" lists the turns that ended by their own steps, not those still running
    (whose failure code is just as empty, until they end)."""

    def queryset(self, request, queryset):
        chosen = super().queryset(request, queryset)
        if self.lookup_val is not None and TurnFailure.NONE in self.lookup_val:
            return chosen.exclude(failure_code=TurnFailure.NONE, status=TurnStatus.RUNNING)
        return chosen


STATUS_TONES = {
    "completed": "ok",
    "partial": "warn",
    "failed": "bad",
    "interrupted": "bad",
    "running": "info",
}


def _folded(text: str, shown: int = 60) -> str:
    """A long text folded under its first words (a click unfolds it); a short one as it is."""
    if len(text) <= shown:
        return text
    return format_html(
        "<details><summary>{}</summary>{}</details>", Truncator(text).chars(shown), text
    )


class TurnChangeList(DrillDownChangeList):
    """The turns sorted by one column at a time, then by time (newest first unless the
    address says oldest): the orders the turns' indexes hold. Django's header links stack the
    columns clicked (status, then user, then time), and a status then a user sorted a whole
    status's turns (2 s); a status alone (`?o=5`, the time's sort removed) was then sorted by
    id, as unindexed."""

    def get_ordering(self, request, queryset):
        typed = self.params.get(ORDER_VAR)
        if typed:
            offered = [part for part in typed.split(".") if self._offered(part)]
            created = str(self.list_display.index("created"))
            times = [part for part in offered if part.lstrip("-") == created]
            if offered and offered[0].lstrip("-") != created:
                self.params[ORDER_VAR] = f"{offered[0]}.{times[0] if times else '-' + created}"
        return super().get_ordering(request, queryset)


@admin.register(Turn)
class TurnAdmin(ConversationWords, RecordAdmin):
    """Turns, newest first: who, where, how it went and what it cost."""

    conversation_fields = ("user_input",)
    list_display = [
        "created",
        "user",
        "room_or_agent",
        "index",
        "mode",
        "status_badge",
        "calls",
        "credits_used",
        "session_deleted",
    ]
    list_display_links = ["created"]
    list_filter = [
        "status",
        ("failure_code", EndedByFilter),
        "mode",
        username_filter("session__started_by"),
        ("session__deleted_at", TurnSessionDeletedFilter),
        "created_at",
    ]
    search_fields = ["id", "session__id", "session__started_by__username", "session__room__name"]
    search_help_text = (
        "A turn or session id (whole, or its first 8 characters as pages print it), a "
        "username, or part of a room name."
    )
    list_select_related = ["session__started_by", "session__room", "session__agent"]
    ordering = ["-created_at"]
    # Newest first (or oldest) is read from an index, and so is a status or a user, then time
    # (turn_status_created and turn_status_newest; a user's sessions, then their turns): any
    # other order sorted every turn (0.5-2.2 s at 300,000), and so did two of these one after
    # the other (`TurnChangeList`).
    sortable_by = ["created", "user", "status_badge"]
    show_full_result_count = False
    fields = [
        "id",
        "session",
        "turn_index",
        "mode",
        "status",
        EndedBy(Turn._meta.get_field("failure_code")),
        "user_input",
        "model_alias_override",
        "roster_shown",
        "routing_shown",
        *USAGE_TOTAL_FIELDS,
        "created_at",
        "progress_at",
        "completed_at",
        "worker",
        "summary_made",
    ]
    readonly_fields = fields
    inlines = [MessageInline, LlmCallEventInline, TurnContextAuditInline]

    def get_changelist(self, request, **kwargs):
        return TurnChangeList

    @admin.display(description="roster")
    def roster_shown(self, turn: Turn) -> str:
        """The agents the turn started with, in their order: a table, each role prompt folded
        under its first words (the page showed the snapshot's JSON, prompts and ids included)."""
        seats = [seat for seat in turn.roster or [] if isinstance(seat, dict)]
        if not seats:
            return self.get_empty_value_display()
        # An agent's role prompt is its owner's configuration, on the agent's page: the roster
        # showed it to who may view turns but not agents.
        prompts = operator_may(VIEW_AGENTS)
        rows = format_html_join(
            "",
            "<tr><td>{} (@{})</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    seat.get("name", ""),
                    seat.get("agent_key", ""),
                    seat.get("model_alias", ""),
                    _folded(seat.get("role_prompt", "")) if prompts else ROLE_PROMPT_WITHHELD,
                )
                for seat in seats
            ),
        )
        return format_html(
            '<table class="pantheon-roster"><thead><tr><th scope="col">agent</th>'
            '<th scope="col">model alias</th><th scope="col">role prompt</th></tr></thead>'
            "<tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="routing")
    def routing_shown(self, turn: Turn) -> str:
        """The manager's choice, in words: "deepseek chose @ada"."""
        routing = turn.routing if isinstance(turn.routing, dict) else None
        if not routing:
            return self.get_empty_value_display()
        chosen = ", ".join(f"@{key}" for key in routing.get("selected_agent_keys") or [])
        said = f"{routing.get('manager_model_alias') or 'the manager'} chose {chosen or 'no one'}"
        if routing.get("fallback_used"):
            why = FALLBACK_REASONS.get(
                routing.get("fallback_reason"), "its answer could not be used"
            )
            said += f" (fallback: {why}, so the first agent answered)"
        if ignored := routing.get("ignored_agent_keys"):
            said += f"; it also named {', '.join(f'@{key}' for key in ignored)}, left out"
        return said

    @admin.display(description="summary it made")
    def summary_made(self, turn: Turn) -> str:
        """The summary whose call this turn made (its context audit says "summary triggered")."""
        summaries = [(related(s),) for s in turn.summaries.order_by("created_at")]
        links = format_html_join(" · ", "{}", summaries)
        return links or self.get_empty_value_display()

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        text = Q(session__started_by__username__iexact=term)
        if request.user.has_perm(VIEW_ROOMS):  # a match told the others a room's name
            text |= Q(session__room__name__icontains=term)
        return by_id_or_text(queryset, term, ids=["pk", "session_id"], text=text), False

    created = moment_column()
    index = figure_column("turn_index", "#", "")
    calls = figure_column("llm_calls", "calls")
    credits_used = figure_column("credits", "credits", credits_text)

    @admin.display(description="user", ordering="session__started_by__username")
    def user(self, turn: Turn) -> str:
        return turn.session.started_by.get_username()

    @admin.display(description="room or agent")
    def room_or_agent(self, turn: Turn) -> str:
        session = turn.session
        if session.room_id:
            return named(session.room)
        return f"@{session.agent.agent_key}" if session.agent_id else DELETED_AGENT

    # Not sortable: sorting every turn by its session's row would read the whole ledger.
    @admin.display(description="session deleted (UTC)")
    def session_deleted(self, turn: Turn) -> str:
        return _deleted_moment(turn.session)

    @admin.display(description="status", ordering="status")
    def status_badge(self, turn: Turn) -> str:
        return badge(STATUS_TONES.get(turn.status, "info"), turn.status)


@admin.register(Message)
class MessageAdmin(RecordAdmin):
    list_display = ["created", "session_named", "sequence", "role", "agent_key", "status"]
    list_display_links = ["created"]
    created = moment_column()
    name_withheld = "words"  # "#3 ada: the first words…" (Message.__str__)

    @admin.display(description="session")
    def session_named(self, message: Message) -> str:
        return named(message.session)

    list_filter = ["role", "status"]
    search_fields = ["session__id"]
    list_select_related = ["session"]
    ordering = ["-created_at"]
    # Newest first is read from an index; any other order sorted every message (0.6-1.1 s at
    # half a million). A session's or turn's messages (searched by its id) are in order anyway.
    sortable_by = ["created"]
    show_full_result_count = False

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        return by_id_or_text(
            queryset, term, ids=["session_id", "turn_id", "pk"], text=Q(agent_key=term)
        ), False


@admin.register(SessionSummary)
class SessionSummaryAdmin(ConversationWords, RecordAdmin):
    # A summary is the conversation's words condensed, its facts and decisions quoted.
    conversation_fields = (
        "summary_text",
        "key_facts",
        "decisions",
        "open_questions",
        "action_items",
    )
    list_display = ["created", "session_named", "from_sequence", "to_sequence", "valid_json"]
    list_display_links = ["created"]
    created = moment_column()

    @admin.display(description="session")
    def session_named(self, summary: SessionSummary) -> str:
        return named(summary.session)

    list_filter = ["valid_json"]
    search_fields = ["session__id"]
    search_help_text = "A session or turn id, or words of a summary."
    list_select_related = ["session"]
    ordering = ["-created_at"]
    show_full_result_count = False

    def get_search_results(self, request, queryset, search_term):
        # By words only for who may read them: a match told the others what was said.
        text = Q(pk__in=[])
        if request.user.has_perm(VIEW_MESSAGES):
            # Its words are its text and its lists (facts, decisions, questions, actions), as
            # its page shows them: a decision's words alone found nothing.
            term = search_term.strip()
            for field in self.conversation_fields:
                text |= Q(**{f"{field}__icontains": term})
        return by_id_or_text(queryset, search_term, ids=["session_id", "turn_id"], text=text), False


@admin.register(TurnContextAudit)
class TurnContextAuditAdmin(RecordAdmin):
    list_display = [
        "created",
        "turn",
        "context_limit",
        "budget",
        "tokens_before",
        "tokens_after",
        "summary_triggered",
        "pruned",
    ]
    list_display_links = ["created"]
    list_filter = ["summary_triggered", "pruned"]
    created = moment_column()
    context_limit = figure_column("model_context_limit", "context limit")
    budget = figure_column("input_budget", "input budget")
    tokens_before = figure_column("estimated_tokens_before", "tokens before")
    tokens_after = figure_column("estimated_tokens_after", "tokens after")
    search_fields = ["turn__id"]
    search_help_text = "A turn or session id."
    list_select_related = ["turn"]
    ordering = ["-created_at"]
    # Newest first is read from an index; sorting by a figure read every audit with its turn.
    sortable_by = ["created"]
    show_full_result_count = False

    def get_search_results(self, request, queryset, search_term):
        # The turns the term names (by their id or their session's: each column's index), then
        # their audits: "the audit's turn is X or its turn's session is X" joined every audit
        # to its turn (0.4-1.4 s at 300,000).
        if not search_term.strip():
            return queryset, False
        turns = by_id_or_text(
            Turn.objects.all(), search_term, ids=["pk", "session_id"], text=Q(pk__in=[])
        )
        return queryset.filter(turn__in=turns.values("pk")), False


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ConversationWords, RecordAdmin):
    """Clients' Idempotency-Keys and the answers retries get: looked at, never edited."""

    # The answer a retry gets is the turn's: its input and messages.
    conversation_fields = ("response_body",)
    list_display = ["key", "username", "state", "response_status", "turn", "created"]
    username = name_column("user", "username")
    created = moment_column()
    list_filter = ["state", "response_status"]
    search_fields = ["key", "user__username"]
    list_select_related = ["user", "turn"]
    ordering = ["-created_at"]
