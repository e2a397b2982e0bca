"""Bounds on how many agents, rooms and sessions one account may own
(`PANTHEON_MAX_AGENTS_PER_USER`, `PANTHEON_MAX_ROOMS_PER_USER`, `PANTHEON_MAX_SESSIONS_PER_USER`).

Every service that creates one (`agent_create`, `room_create`, `session_create_in_room`,
`session_create_direct`: the API's and `seed_demo`'s) calls `owned_below_bound` in its
transaction, before its insert. The console's pages (operators) create past them.

Race-safe on PostgreSQL: the owner's user row is locked first (FOR NO KEY UPDATE: the inserts
of rows that refer to the user, a turn's, take FOR KEY SHARE, and do not wait on it), so two
creates at the bound count one after the other, and the second sees the first's row. On SQLite
every transaction takes the write lock as it begins (settings: `transaction_mode`), which
orders them the same way.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from pantheon.exceptions import OwnedLimitReached

# What a refusal tells its client to do, by what it counts.
FREE_ONE = {
    "agent": "delete an agent",
    "room": "delete a room",
    "session": "delete a session (or a room, with its sessions)",
}


def owned_below_bound(*, owner, owned: QuerySet, kind: str, setting: str) -> None:
    """Refuse (`OwnedLimitReached`, a 409) a create of one more `kind` of `owner`'s, if
    `owned` (those that count: not deleted) already holds the bound `setting` names; 0 is no
    bound. Must run in the create's transaction: the lock it takes holds until that ends."""
    limit = getattr(settings, setting)
    if not limit:
        return
    users = get_user_model().objects.select_for_update(no_key=True).filter(pk=owner.pk)
    list(users.values_list("pk", flat=True))
    # Counts no further than the bound: a create's cost does not grow with what is owned.
    if owned[:limit].count() >= limit:
        raise OwnedLimitReached(kind=kind, limit=limit, free_one=FREE_ONE[kind])
