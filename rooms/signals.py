"""What a room's writes tell the apps built on rooms, which `rooms` does not import (its import
contract: sessions depend on rooms, never the other way)."""

from django.dispatch import Signal

# Sent by `room_delete` in its transaction, before the room is marked deleted, with `room`:
# what went with the room ends there too (sessions_app: the running turns of its sessions).
room_deleting = Signal()

# Sent by `agent_delete` in its transaction, the agent's row locked, before it is deleted, with
# `agent`: its direct sessions lose it (sessions_app: those without a title take its name).
agent_deleting = Signal()
