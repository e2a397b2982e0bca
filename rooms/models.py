from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

AGENT_KEY_PATTERN = r"^[a-z0-9_]{1,32}$"


class RoomMode(models.TextChoices):
    MANUAL = "manual", "Manual (tag agents with @key)"
    ROUNDTABLE = "roundtable", "Roundtable"
    ORCHESTRATOR = "orchestrator", "Orchestrator"


# Clients may say `tag` for manual mode; it is stored as `manual`.
MODE_ALIASES = {"tag": RoomMode.MANUAL}


class Agent(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by agent_key_unique_per_owner, which it leads (pantheon/migration_indexes.py).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agents", db_index=False
    )
    agent_key = models.CharField(
        max_length=32,
        validators=[RegexValidator(AGENT_KEY_PATTERN, "Use 1-32 lowercase letters, digits or _.")],
    )
    name = models.CharField(max_length=100)
    model_alias = models.CharField(max_length=64, db_index=True)  # which agents use an alias
    role_prompt = models.TextField(blank=True)
    tool_permissions = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "agent_key"], name="agent_key_unique_per_owner"
            ),
            models.CheckConstraint(
                condition=models.Q(agent_key__regex=AGENT_KEY_PATTERN), name="agent_key_format"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} (@{self.agent_key})"


class RoomQuerySet(models.QuerySet):
    def alive(self) -> RoomQuerySet:
        """Rooms not soft-deleted: a deleted room keeps its rows for the ledger but is gone
        from the API."""
        return self.filter(deleted_at__isnull=True)


class Room(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by room_owner_created, which it leads.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rooms", db_index=False
    )
    name = models.CharField(max_length=200)
    goal = models.TextField(blank=True)
    current_mode = models.CharField(
        max_length=16, choices=RoomMode.choices, default=RoomMode.MANUAL
    )
    pending_mode = models.CharField(max_length=16, choices=RoomMode.choices, null=True, blank=True)
    agents: models.ManyToManyField[Agent, RoomAgent] = models.ManyToManyField(
        Agent, through="RoomAgent", related_name="rooms"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = RoomQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["owner", "created_at"], name="room_owner_created")]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_mode(self) -> str:
        """The mode the next turn will run in."""
        return self.pending_mode or self.current_mode


class RoomAgent(models.Model):
    # Indexed by room_position_unique, which it leads.
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="seats", db_index=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="seats")
    position = models.PositiveIntegerField()

    class Meta:
        ordering = ["room", "position"]
        constraints = [
            models.UniqueConstraint(fields=["room", "position"], name="room_position_unique"),
            models.UniqueConstraint(fields=["room", "agent"], name="room_agent_unique"),
        ]

    def __str__(self) -> str:
        # Read with its agent (the room's page and the seats' list select it with the seat).
        return f"{self.agent} at seat {self.position} of {self.room}"
