from django.contrib import admin

from pantheon.console import SoftDeleteAdmin, username_filter
from rooms.models import Agent, Room, RoomAgent
from rooms.services import room_delete


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["agent_key", "name", "owner", "model_alias", "created_at"]
    list_filter = ["model_alias", username_filter("owner")]
    search_fields = ["agent_key", "name", "owner__username"]
    list_select_related = ["owner"]
    readonly_fields = ["id", "created_at", "updated_at"]
    raw_id_fields = ["owner"]


class RoomAgentInline(admin.TabularInline):
    model = RoomAgent
    verbose_name = "seated agent"
    verbose_name_plural = "seated agents"
    extra = 0
    autocomplete_fields = ["agent"]
    ordering = ["position"]


@admin.register(Room)
class RoomAdmin(SoftDeleteAdmin):
    list_display = ["name", "owner", "current_mode", "pending_mode", "created_at", "deleted_at"]
    list_filter = [
        "current_mode",
        "pending_mode",
        username_filter("owner"),
        ("deleted_at", admin.EmptyFieldListFilter),
    ]
    search_fields = ["name", "owner__username"]
    list_select_related = ["owner"]
    readonly_fields = ["id", "created_at", "updated_at", "deleted_at"]
    raw_id_fields = ["owner"]
    inlines = [RoomAgentInline]

    def soft_delete(self, obj: Room) -> None:
        room_delete(room=obj)


@admin.register(RoomAgent)
class RoomAgentAdmin(admin.ModelAdmin):
    list_display = ["room", "position", "agent"]
    list_select_related = ["room", "agent"]
    search_fields = ["room__name", "agent__agent_key"]
    raw_id_fields = ["room", "agent"]
