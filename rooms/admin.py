from django.contrib import admin

from rooms.models import Agent, Room, RoomAgent


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["agent_key", "name", "owner", "model_alias", "created_at"]
    list_filter = ["model_alias"]
    search_fields = ["agent_key", "name", "owner__username"]
    list_select_related = ["owner"]
    readonly_fields = ["id", "created_at", "updated_at"]


class RoomAgentInline(admin.TabularInline):
    model = RoomAgent
    extra = 0
    autocomplete_fields = ["agent"]
    ordering = ["position"]


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "current_mode", "pending_mode", "created_at", "deleted_at"]
    list_filter = ["current_mode", "pending_mode", ("deleted_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "owner__username"]
    list_select_related = ["owner"]
    readonly_fields = ["id", "created_at", "updated_at"]
    inlines = [RoomAgentInline]


@admin.register(RoomAgent)
class RoomAgentAdmin(admin.ModelAdmin):
    list_display = ["room", "position", "agent"]
    list_select_related = ["room", "agent"]
    search_fields = ["room__name", "agent__agent_key"]
    raw_id_fields = ["room", "agent"]
