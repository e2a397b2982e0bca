from typing import Self

from django import forms
from django.contrib import admin
from django.db import transaction
from django.forms.formsets import DELETION_FIELD_NAME
from django.forms.models import BaseInlineFormSet
from django.forms.utils import ErrorList
from rest_framework import serializers

from pantheon.console import (
    ChangesWithValues,
    DeletedFilter,
    EditedAsShownAdmin,
    ShownMoments,
    SoftDeleteAdmin,
    TextLines,
    choices_read_once,
    deleted,
    moment_column,
    name_column,
    named,
    username_filter,
)
from pantheon.fields import MAX_LIST_ITEMS
from rooms.models import Agent, Room, RoomAgent
from rooms.serializers import AgentSerializer, RoomSerializer
from rooms.services import (
    agent_delete,
    room_delete,
    rooms_lock,
    rooms_touch,
    seats_close_gaps,
)
from usage.selectors import model_aliases_enabled

# As the API (PUT rooms/<id>/agents answers "Unknown agent"): a room runs its owner's agents
# only, never another user's (and its private role prompt).
FOREIGN_AGENT = "Choose one of the room owner's agents: a room seats only its owner's agents."


class OwnerSetOnce:
    """The owner is chosen on the add page and read-only after. Handed to another user, an
    agent would sit in its first owner's rooms and direct sessions, and a room would run its
    new owner's agents in the sessions its first owner started (sessions belong to whoever
    started them): what the API, where nothing changes hands, never allows."""

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return fields if obj is None else [*fields, "owner"]


class CheckedAsTheApi(forms.ModelForm):
    """A form whose `api_checked` fields are checked by the API serializer's own fields (the
    same limits and messages, written once), their text boxes capped at the API's length."""

    api_serializer: type[serializers.Serializer]
    api_checked: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.api_fields = self.api_serializer().fields
        for name in self.api_checked:
            longest = getattr(self.api_fields[name], "max_length", None)
            if name in self.fields and longest:
                self.fields[name].widget.attrs["maxlength"] = longest

    def clean(self):
        cleaned = super().clean()
        for name in self.api_checked:
            if name in cleaned:
                try:
                    cleaned[name] = self._as_the_api(name, cleaned[name])
                except forms.ValidationError as error:
                    self.add_error(name, error)
        return cleaned

    def _as_the_api(self, name: str, value):
        try:
            return self.api_fields[name].run_validation(value)
        except serializers.ValidationError as exc:
            messages = [str(message) for message in _messages(exc.detail)]
            raise forms.ValidationError(messages) from exc


class AgentForm(CheckedAsTheApi):
    """An agent as the API takes one: an enabled model alias (the one it has is kept even when
    disabled since), and the name, role prompt and tool permissions checked by the API's own
    fields (AgentSerializer: a name of zero-width characters is as blank as one of spaces);
    its key once per owner, also once the owner is read-only (Django checks the pair only when
    both are in the form: the duplicate reached the database, a 500)."""

    api_serializer = AgentSerializer
    api_checked = ("name", "role_prompt", "tool_permissions")

    class Meta:
        model = Agent
        fields = ["owner", "agent_key", "name", "model_alias", "role_prompt", "tool_permissions"]
        field_classes = {"role_prompt": TextLines}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        current = None if self.instance._state.adding else self.instance.model_alias
        enabled = list(model_aliases_enabled().values_list("alias", flat=True))
        choices = [(alias, alias) for alias in enabled]
        if current and current not in enabled:
            choices.insert(0, (current, f"{current} (disabled)"))
        self.fields["model_alias"] = forms.ChoiceField(
            choices=[("", "---------"), *choices], label="Model alias"
        )

    def _as_the_api(self, name: str, value):
        if name == "tool_permissions" and value in (None, ""):
            return []
        return super()._as_the_api(name, value)

    def clean(self):
        cleaned = super().clean()
        key = cleaned.get("agent_key")
        if "owner" not in self.fields and key and self.instance.owner_id is not None:
            others = Agent.objects.filter(owner_id=self.instance.owner_id, agent_key=key)
            if others.exclude(pk=self.instance.pk).exists():
                self.add_error(
                    "agent_key",
                    forms.ValidationError(
                        "%(owner)s has an agent with this key already.",
                        code="unique",
                        params={"owner": self.instance.owner.get_username()},
                    ),
                )
        return cleaned


def _messages(detail) -> list:
    """DRF's error detail (a list, or a dict by list index for a list field's items) flat. An
    item's error says which item it is about, counted from 1 as people count ("Item 2: Must be
    a string."): flat, two bad items read "Must be a string. Must be a string."."""
    if isinstance(detail, dict):
        return [
            f"Item {index + 1}: {message}" if isinstance(index, int) else message
            for index, item in detail.items()
            for message in _messages(item)
        ]
    if isinstance(detail, list):
        return [message for item in detail for message in _messages(item)]
    return [detail]


@admin.register(Agent)
class AgentAdmin(
    ChangesWithValues, ShownMoments, OwnerSetOnce, EditedAsShownAdmin, admin.ModelAdmin
):
    form = AgentForm
    list_display = ["agent_key", "name", "owner_name", "model_alias", "created"]
    created = moment_column()
    owner_name = name_column("owner", "username", "owner")
    list_filter = ["model_alias", username_filter("owner")]
    search_fields = ["agent_key", "name", "owner__username"]
    list_select_related = ["owner"]
    readonly_fields = ["id", "created_at", "updated_at"]
    raw_id_fields = ["owner"]

    def get_queryset(self, request):
        # The seat autocomplete names each agent's owner (autocomplete_label): read with it.
        return super().get_queryset(request).select_related("owner")

    def autocomplete_label(self, agent: Agent) -> str:
        """Agent keys are unique per owner only: the owner tells one "Ada (@ada)" from another."""
        return f"{agent} of {agent.owner.get_username()}"

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        # A new agent's id is made as it is saved: the add page showed one it would not get.
        return fields if obj is not None else [field for field in fields if field != "id"]

    def delete_model(self, request, obj):
        # As the API deletes one: its rooms locked first (the order of every writer of seats),
        # and their seats numbered 0, 1, 2... again without it (the cascade alone left a gap).
        self._seats_logged(request, agent_delete(agent=obj))

    def delete_queryset(self, request, queryset):
        for agent in queryset:
            with transaction.atomic():  # each agent's seats logged with its delete
                self._seats_logged(request, agent_delete(agent=agent))

    def _seats_logged(self, request, seats: list[RoomAgent]) -> None:
        """Each room's history names the seat an agent's delete took, as a seat deleted on the
        room's page is named there: the cascade took it without a word in the room's history,
        and only the agent's delete page, before the delete, had listed it."""
        for seat in seats:
            self.log_change(
                request, seat.room, f"Deleted room agent “{seat}”: its agent was deleted."
            )


class SeatForm(forms.ModelForm):
    """A seat in a room, refused when its agent belongs to someone else than the room's owner
    (in the room's inline, whose room is the one on the page, and on the seat's own page)."""

    class Meta:
        model = RoomAgent
        fields = ["room", "agent", "position"]

    def clean(self):
        cleaned = super().clean()
        room, agent = cleaned.get("room"), cleaned.get("agent")
        if deleted(room) and "room" in self.changed_data:
            self.add_error(
                "room",
                forms.ValidationError(
                    "This room was deleted: its seats stay as they were.", code="deleted_room"
                ),
            )
            return cleaned
        if room is None or agent is None or room.owner_id is None:
            return cleaned
        if agent.owner_id != room.owner_id:
            self.add_error(
                "agent",
                forms.ValidationError(
                    "%(agent)s belongs to %(agent_owner)s, not to %(room_owner)s, the room's "
                    "owner: a room seats only its owner's agents.",
                    code="foreign_agent",
                    params={
                        "agent": agent,
                        "agent_owner": agent.owner.get_username(),
                        "room_owner": room.owner.get_username(),
                    },
                ),
            )
        return cleaned


def locked_seats(room_id) -> list[RoomAgent]:
    """The room's seats in the database, in order, the room's row locked for the rest of the
    transaction: a seat saved elsewhere meanwhile (its own page, the API's roster, which lock
    the room too) waits for this one's numbers, instead of taking one of them (a 500 on the
    unique seats). Only locked: the room page reads them before it knows whether they change,
    and may refuse them; its save moves the room's `updated_at` if they do."""
    rooms_lock([room_id], seats_change=False)
    seats = RoomAgent.objects.filter(room_id=room_id).select_related("agent")
    return list(seats.order_by("position"))


def numbered(
    order: list[RoomAgent], placed: list[tuple[RoomAgent, int]], saved: list[RoomAgent]
) -> list[RoomAgent]:
    """Number seats 0, 1, 2... as the API seats a roster: `order` in its order, with each of
    `placed` put at its place in it (past the end is the end). Returns those of `saved` (seats
    as read from the database) whose number changes: they are to be saved too."""
    order = list(order)
    for seat, place in sorted(placed, key=lambda item: item[1]):
        order.insert(min(place, len(order)), seat)
    before = {seat.pk: seat.position for seat in saved}
    for index, seat in enumerate(order):
        seat.position = index
    return [seat for seat in saved if seat.position != before[seat.pk]]


def seats_saved(seats: list[RoomAgent], *, moved: list[RoomAgent], leaving=()) -> None:
    """Save `seats` (new or changed) and the `moved` ones, and delete the `leaving` ones. Seats
    saved one by one collided when two traded places or agents (a 500 on the unique seats): as
    the API's roster clears the seats before it seats the new ones, the seats already saved
    that change or go leave first; the changed ones come back under their ids, so logs and
    links still name them."""
    changed = [*moved, *(seat for seat in seats if seat.pk is not None and seat not in moved)]
    RoomAgent.objects.filter(pk__in=[seat.pk for seat in [*leaving, *changed]]).delete()
    for seat in [*changed, *(seat for seat in seats if seat.pk is None)]:
        seat.save(force_insert=True)


# The most agents a room seats: as many as the API's roster takes (`agent_ids` of `POST rooms` and
# `PUT rooms/{id}/agents`). A room the console seated past it read back with a roster that the
# API refused to take as it was read (a client reordering its seats got a 400).
MAX_SEATS = MAX_LIST_ITEMS


def _too_many_seats(count: int) -> forms.ValidationError:
    return forms.ValidationError(
        "A room seats at most %(most)s agents, as the API does: this would seat %(count)s.",
        code="too_many_seats",
        params={"most": MAX_SEATS, "count": count},
    )


def _stale(why: str) -> forms.ValidationError:
    return forms.ValidationError(
        "%(why)s since this page was opened: nothing was saved. The seats below are the "
        "room's as they are now: make your changes to them again.",
        code="stale",
        params={"why": why},
    )


class SeatFormSet(BaseInlineFormSet):
    """The room page's seats, numbered as the API seats a roster (`PUT rooms/{id}/agents`):
    0, 1, 2... in order, the order being the positions typed (5, 9, 2 are kept as 1, 2, 0; a
    seat that goes closes its gap). Each seat whose number changes is saved and logged with
    the number it gets ("Position: 0 → 1"), whether typed or moved up by another's.

    A seat added to the room elsewhere while the page was open (on its own page) keeps its
    place among the page's seats and is numbered with them. The page is refused, with nothing
    saved, when it cannot be saved as typed: one of its seats is gone (the API seated a new
    roster), or it seats an agent seated meanwhile, or it reorders seats reordered meanwhile
    (seats it leaves in place keep that order). The refused page shows the room's seats as they
    are now instead, with the refusal above them (`as_now`)."""

    refusal: ErrorList | None = None  # said above the seats as they are now

    def add_fields(self, form, index):
        """Each seat's agent, position and delete box named for a screen reader: Django's
        tabular rows label no input (the column's header is a th), so tabbing through the seats
        read "combo box, Ada", "spin button, 1", "check box" with nothing to say which."""
        super().add_fields(form, index)
        if "position" in form.fields:
            # The position the page showed, posted back beside the one typed
            # (`keep_order_given_elsewhere`).
            form.fields["position"].show_hidden_initial = True
        row = "a new seat" if index is None else f"seat row {index + 1}"
        for name in ("agent", "position", DELETION_FIELD_NAME):
            if name in form.fields:
                field = form.fields[name]
                # The agent's select sits in the admin's wrapper (its add and change links).
                widget = getattr(field.widget, "widget", field.widget)
                widget.attrs["aria-label"] = f"{field.label} ({row})"

    def non_form_errors(self):
        return super().non_form_errors() if self.refusal is None else self.refusal

    def shown_position(self, form) -> int | None:
        """The position the page showed the seat at (its hidden initial), None if not posted."""
        field = form.fields["position"]
        name = form.add_initial_prefix("position")
        try:
            return field.to_python(field.hidden_widget().value_from_datadict(form.data, {}, name))
        except forms.ValidationError:
            return None

    def keep_order_given_elsewhere(self, staying: list, saved: list[RoomAgent]) -> None:
        """When a seat the page shows was moved elsewhere since it was opened (its own page,
        another room page): the page's seats keep the room's order as it is now, unless the
        page reorders them too, which is refused as stale. Their old numbers, posted back
        unchanged, would put back the order the page had shown, each seat "changed" to it."""
        now = {seat.pk: seat.position for seat in saved}
        shown = [(form, self.shown_position(form)) for form in staying if form.instance.pk in now]
        if all(position in (None, now[form.instance.pk]) for form, position in shown):
            return  # none moved elsewhere
        if any(position not in (None, form.cleaned_data["position"]) for form, position in shown):
            raise _stale("The seats were reordered")
        for form, _ in shown:
            form.cleaned_data["position"] = now[form.instance.pk]
        staying.sort(key=lambda form: form.cleaned_data["position"])

    def refused_as_stale(self) -> bool:
        """Whether the seats posted were refused because they changed elsewhere meanwhile."""
        if not self.is_bound:
            return False
        return any(error.code == "stale" for error in self.non_form_errors().as_data())

    def as_now(self, queryset) -> Self:
        """The room's seats as they are now (from `queryset`, the inline's), unbound, with this
        formset's refusal above them. Redisplayed as posted, the refused seats put the values
        typed beside the captions of the seats now in the room (Django reads each row's seat
        anew, a seat replaced meanwhile as the one now at its row): two states mixed, which
        saved again would be refused again."""
        now = type(self)(instance=self.instance, prefix=self.prefix, queryset=queryset)
        now.refusal = self.non_form_errors()
        return now

    def clean(self):
        if any(self.model._meta.pk.name in form.errors for form in self.forms):
            # Django refuses a seat that is no longer the room's in its hidden id field, which
            # the page does not show: "Please correct the error below" over no error. Said
            # before the typing's mistakes, which were typed over seats no longer there.
            raise _stale("A seat this page shows was removed from the room")
        super().clean()  # two seats typed at one position are refused next
        if any(self.errors):
            return
        staying = [
            form
            for form in self.forms
            if not self._should_delete_form(form) and (form.instance.pk or form.has_changed())
        ]
        staying.sort(key=lambda form: form.cleaned_data["position"])
        shown = {form.instance.pk for form in self.forms if form.instance.pk}
        saved = [] if self.instance._state.adding else locked_seats(self.instance.pk)
        if shown - {seat.pk for seat in saved}:
            raise _stale("A seat this page shows was removed from the room")
        others = [seat for seat in saved if seat.pk not in shown]
        seated = {seat.agent_id: seat.agent for seat in others}
        for form in staying:
            if form.cleaned_data["agent"].pk in seated:
                agent = seated[form.cleaned_data["agent"].pk]
                raise _stale(f"{agent} was seated in this room")
        if len(staying) + len(others) > MAX_SEATS:
            raise _too_many_seats(len(staying) + len(others))
        self.keep_order_given_elsewhere(staying, saved)
        self.others_moved = numbered(
            [form.instance for form in staying],
            [(seat, seat.position) for seat in others],
            saved=others,
        )
        for form in staying:
            index = form.cleaned_data["position"] = form.instance.position
            if form.instance.pk is None:
                continue  # a new seat is saved and logged as added anyway
            changed = form.changed_data  # Django's list: saving and the log both read it
            if index != form.initial["position"] and "position" not in changed:
                changed.append("position")
            elif index == form.initial["position"] and "position" in changed:
                changed.remove("position")


class RoomAgentInline(admin.TabularInline):
    model = RoomAgent
    form = SeatForm
    formset = SeatFormSet
    verbose_name = "seated agent"
    verbose_name_plural = "seated agents"
    extra = 0
    # Until the room has an owner (the add page), any agent may be picked, and SeatForm refuses
    # another user's on save; once it has one, the choices are that owner's few agents.
    autocomplete_fields = ["agent"]
    ordering = ["position"]
    room_owner_id = None

    def get_queryset(self, request):
        # Each row's caption names its agent and room: one query, not two a seat.
        return super().get_queryset(request).select_related("agent", "room")

    def get_formset(self, request, obj=None, **kwargs):
        # An inline instance serves one request: remember whose agents the room may seat.
        self.room_owner_id = getattr(obj, "owner_id", None)
        return super().get_formset(request, obj, **kwargs)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "agent" and self.room_owner_id is not None:
            kwargs["queryset"] = Agent.objects.filter(owner_id=self.room_owner_id).order_by(
                "agent_key"
            )
            kwargs["widget"] = forms.Select
            kwargs["error_messages"] = {"invalid_choice": FOREIGN_AGENT}
            # The owner's agents read once for the page, not once per seat's select.
            return choices_read_once(super().formfield_for_foreignkey(db_field, request, **kwargs))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class RoomForm(CheckedAsTheApi):
    """A room's name and goal as the API takes them (RoomSerializer's limits: the goal goes to
    the provider with every call of the room's agents)."""

    api_serializer = RoomSerializer
    api_checked = ("name", "goal")

    class Meta:
        model = Room
        fields = ["owner", "name", "goal", "current_mode", "pending_mode"]
        field_classes = {"goal": TextLines}


@admin.register(Room)
class RoomAdmin(ChangesWithValues, ShownMoments, OwnerSetOnce, EditedAsShownAdmin, SoftDeleteAdmin):
    form = RoomForm
    list_display = ["name", "owner_name", "current_mode", "pending_mode", "created", "deleted"]
    created = moment_column()
    owner_name = name_column("owner", "username", "owner")
    deleted = moment_column("deleted_at", "deleted (UTC)")
    list_filter = [
        "current_mode",
        "pending_mode",
        username_filter("owner"),
        ("deleted_at", DeletedFilter),
    ]
    search_fields = ["name", "owner__username"]
    list_select_related = ["owner"]
    readonly_fields = ["id", "created_at", "updated_at", "deleted_at"]
    # Named by its id to who may not view rooms (`pantheon.console.named`): a ledger row's or a
    # turn's page named its room.
    name_withheld = "name"
    raw_id_fields = ["owner"]
    inlines = [RoomAgentInline]
    soft_delete_effect = (
        "goes from the API at once (it and its sessions answer 404 and take no more turns; a "
        "turn still running in one ends as its user's cancel would end it) and stays here, "
        "marked deleted and read-only with its seats; its sessions, turns and ledger rows stay "
        "too."
    )

    def soft_delete(self, obj: Room) -> None:
        room_delete(room=obj)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # A page refused because its seats changed elsewhere shows the room's seats as they are
        # now, saying why above them; the room's own fields stay as typed, to be saved again.
        shown = context["inline_admin_formsets"]
        for index, inline_admin_formset in enumerate(shown):
            seats, inline = inline_admin_formset.formset, inline_admin_formset.opts
            if isinstance(seats, SeatFormSet) and seats.refused_as_stale():
                now = seats.as_now(inline.get_queryset(request))
                (shown[index],) = self.get_inline_formsets(request, [now], [inline], obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_formset(self, request, form, formset, change):
        if formset.model is not RoomAgent:
            return super().save_formset(request, form, formset, change)
        seats = formset.save(commit=False)
        moved = [*(seat for seat, _ in formset.changed_objects), *formset.others_moved]
        if change and not form.changed_data and (seats or moved or formset.deleted_objects):
            # Only the seats changed: they move the room's `updated_at` (the room is locked
            # already, by the formset's check), as the save of its own fields would have.
            rooms_touch([form.instance.pk])
        seats_saved(seats, moved=moved, leaving=formset.deleted_objects)
        formset.save_m2m()
        return None


class SeatPageForm(SeatForm):
    """A seat on its own page, whose position is its place among the room's seats: typed at a
    number another seat holds, it takes that number and the others move around it
    (RoomAgentAdmin renumbers them)."""

    class Meta(SeatForm.Meta):
        help_texts = {
            "position": "Its place among the room's seats, from 0 (a number past the last "
            "seat's is last): the room's seats are numbered 0, 1, 2... in order when it is saved."
        }

    def _get_validation_exclusions(self):
        # Not checked against the seats saved (room_position_unique): the save renumbers.
        return {*super()._get_validation_exclusions(), "position"}

    def clean(self):
        cleaned = super().clean()
        room = cleaned.get("room")
        joining = self.instance._state.adding or "room" in self.changed_data
        if room is not None and joining and not self.errors:
            # Counted under the room's lock (the page's transaction holds it to the save), so
            # two seats added at once cannot both take its last place.
            others = [seat for seat in locked_seats(room.pk) if seat.pk != self.instance.pk]
            if len(others) >= MAX_SEATS:
                self.add_error("room", _too_many_seats(len(others) + 1))
        return cleaned


@admin.register(RoomAgent)
class RoomAgentAdmin(admin.ModelAdmin):
    """A seat on its own page. Its room's seats are numbered 0, 1, 2... after each save, as the
    room page numbers them, the position typed saying where the seat goes (7 in a room of three
    seats is the last, 3); a seat that leaves its room, moved or deleted, closes its gap."""

    form = SeatPageForm
    name_withheld = "name"  # "Ada (@ada) at seat 1 of Research": its room's name
    list_display = ["room_named", "position", "agent"]

    @admin.display(description="room", ordering="room__name")
    def room_named(self, seat: RoomAgent) -> str:
        return named(seat.room)

    def get_search_fields(self, request):
        # A room's name only for who may read it: a match told the others what it was.
        if request.user.has_perm("rooms.view_room"):
            return self.search_fields
        return [name for name in self.search_fields if not name.startswith("room__")]

    list_select_related = ["room", "agent"]
    search_fields = ["room__name", "agent__agent_key"]
    raw_id_fields = ["room", "agent"]

    # A deleted room's seats stay as they were when it was deleted, as the room does (its own
    # page, read-only, makes its seats inline read-only too). Not has_delete_permission: an
    # agent's delete takes its seats with it, as the API's does.
    def has_change_permission(self, request, obj=None):
        return not (obj and deleted(obj.room)) and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        if change and not form.has_changed():
            # Its room, agent and place as they are: nothing to write, the room's `updated_at`
            # stays (the room's seats are numbered 0, 1, 2... already).
            return
        left = form.initial.get("room") if change else None
        moved = left is not None and left != obj.room_id
        # Both rooms locked in one order: two seats moved across them both ways would wait
        # for each other (a deadlock) if each save locked its own room first.
        rooms_lock([left, obj.room_id] if moved else [obj.room_id])
        others = [seat for seat in locked_seats(obj.room_id) if seat.pk != obj.pk]
        seats_saved([obj], moved=numbered(others, [(obj, obj.position)], saved=others))
        form.cleaned_data["position"] = obj.position
        if moved:
            seats_close_gaps(room_ids=[left])

    def delete_model(self, request, obj):
        # The room locked before its seat goes, as the API's roster change does (room, then
        # seats): the other order could deadlock with it.
        rooms_lock([obj.room_id])
        super().delete_model(request, obj)
        seats_close_gaps(room_ids=[obj.room_id])

    @transaction.atomic  # the list's delete action runs outside the page's transaction
    def delete_queryset(self, request, queryset):
        rooms = set(queryset.values_list("room_id", flat=True))
        rooms_lock(rooms)
        super().delete_queryset(request, queryset)
        seats_close_gaps(room_ids=rooms)
