"""Load at startup what the first requests would otherwise pay for."""

import gc
import itertools
import logging
import threading
import time

from django.conf import settings
from django.db import DatabaseError, connection
from django.urls import resolve

from pantheon import runner
from pantheon.db import OUTAGE_RETRY_SECONDS, connection_lost, outage_pause
from pantheon.llm import alias_config, get_gateway

logger = logging.getLogger(__name__)


def warm_up() -> None:
    started = time.monotonic()
    resolve("/api/v1/health")  # loads the URL configuration: every view, serializer, service
    get_gateway().warm_up()  # litellm and the demo provider
    open_the_pool()
    settle_garbage_collector()
    logger.info("worker warmed up in %.1fs", time.monotonic() - started)


def open_the_pool() -> None:
    """Open the database pool, end the turns the workers this one replaces left running, and
    say which role's model alias is missing; nothing here fails the worker's boot (gunicorn
    would stop the server)."""
    try:
        connection.ensure_connection()  # opens the pool
        end_turns_of_exited_workers()
    except Exception as error:
        if not (isinstance(error, DatabaseError) and connection_lost(error)):
            # Neither the worker's boot to fail (gunicorn would stop the server) nor an outage
            # another try gets past: those turns wait for the stale limit, as before.
            logger.exception("warm-up: the turns of exited workers could not be ended")
            return
        logger.warning("warm-up: the database is not reachable yet (%s)", error)
        if runner.predecessors():
            threading.Thread(
                target=keep_trying_to_end_turns_of_exited_workers,
                name="pantheon-exited-workers",
                daemon=True,
            ).start()
    else:
        try:
            warn_of_missing_role_aliases()
            warn_of_aliases_without_their_key()
        except Exception:
            logger.exception("warm-up: the model aliases could not be checked")
    finally:
        connection.close()


# The turns a line names in its words, and in its `turn_ids` field (a JSON line stays short).
NAMED_TURNS = 20
LISTED_TURNS = 1000


def end_turns_of_exited_workers() -> None:
    """End the turns the workers gunicorn replaces with this one left running (`pantheon.runner`):
    one killed mid-turn leaves them so, and their sessions are refused new turns until then."""
    from sessions_app.services import turns_of_exited_workers_interrupt

    names = runner.predecessors()
    ended = turns_of_exited_workers_interrupt(workers=names)
    if ended.turn_ids:
        # Which turns: the operator of a worker killed mid-turn (gunicorn's "was sent SIGKILL!
        # Perhaps out of memory?" names its pid, as the worker's name does) looks them up, their
        # users' complaints and their lines before the kill by these ids.
        ids = [str(turn_id) for turn_id in ended.turn_ids]
        named = ", ".join(ids[:NAMED_TURNS])
        if len(ids) > NAMED_TURNS:
            named += f" and {len(ids) - NAMED_TURNS} more"
        logger.warning(
            "ended %d turn(s) interrupted by the exit of worker(s) %s; %d call(s) in flight "
            "marked lost (the provider may have billed them): %s",
            len(ids),
            ", ".join(names),
            ended.lost_calls,
            named,
            extra={"turn_ids": ids[:LISTED_TURNS], "workers": names},
        )


# The settings that name a model alias for a role, and what goes without it.
ROLE_ALIASES = {
    "PANTHEON_MANAGER_MODEL_ALIAS": "orchestrator rooms refuse turns",
    "PANTHEON_SUMMARIZER_MODEL_ALIAS": "sessions get no new summaries",
}


def warn_of_missing_role_aliases() -> None:
    """One warning for each setting that names a model alias the database does not hold (or
    holds disabled): a typo in PANTHEON_MANAGER_MODEL_ALIAS showed first as an orchestrator
    room's refusal, and one in the summarizer's as nothing at all. Not a refusal to start:
    aliases are rows an operator may add after a deploy."""
    from usage.models import ModelAlias

    named = {setting: getattr(settings, setting) for setting in ROLE_ALIASES}
    enabled = dict(
        ModelAlias.objects.filter(alias__in=set(named.values())).values_list("alias", "enabled")
    )
    for setting, alias in named.items():
        if enabled.get(alias):
            continue
        state = "is disabled" if alias in enabled else "does not exist"
        logger.warning(
            "%s names the model alias %r, which %s: %s until it is %s (manage.py "
            "set_model_alias) or the setting names another",
            setting,
            alias,
            state,
            ROLE_ALIASES[setting],
            "enabled" if alias in enabled else "added",
        )


def warn_of_aliases_without_their_key() -> None:
    """With live providers, one warning for each key variable that enabled aliases name and
    this server's environment does not set (or sets blank): their calls are not sent, and
    each of their answers fails `bad_request` (`pantheon.llm.alias_config`). That was said
    only call by call, once users had seen their turns fail; a misspelt variable in a deploy
    (the seeded aliases all name OPENROUTER_API_KEY) failed every turn. Names only, never a
    value; not a refusal to start, as the variable may be meant for another server."""
    from usage.models import ModelAlias

    if settings.PANTHEON_LLM_BACKEND != "live":
        return
    unset: dict[str, list[str]] = {}
    for row in ModelAlias.objects.filter(enabled=True).exclude(api_key_env="").order_by("alias"):
        if variable := alias_config(row).missing_key:
            unset.setdefault(variable, []).append(row.alias)
    for variable, aliases in sorted(unset.items()):
        logger.warning(
            "%s is not set in this server's environment: the calls of the model alias(es) %s "
            "are not sent, and their answers fail bad_request, until it is",
            variable,
            ", ".join(aliases),
        )


# The waits between tries to reach the database for the exited workers' turns: those of a
# turn's ending (`pantheon.db.OUTAGE_RETRY_SECONDS`).
RETRY_SECONDS = OUTAGE_RETRY_SECONDS


def keep_trying_to_end_turns_of_exited_workers() -> bool:
    """`end_turns_of_exited_workers` once the database answers, in a thread of its own (the
    worker serves meanwhile), for up to the stale limit: past it, the next turn of each session
    takes the turn over anyway. Whether it got through."""
    deadline = time.monotonic() + settings.PANTHEON_TURN_STALE_SECONDS
    for attempt in itertools.count():
        pause = outage_pause(attempt, RETRY_SECONDS)
        if time.monotonic() + pause >= deadline:
            break
        time.sleep(pause)
        try:
            end_turns_of_exited_workers()
            return True
        except DatabaseError as error:
            if connection_lost(error):
                continue
            logger.exception("the turns of exited workers could not be ended")
            return False
        finally:
            connection.close()
    logger.warning(
        "the turns left running by worker(s) %s wait for the stale limit: the database did not "
        "answer",
        ", ".join(runner.predecessors()),
    )
    return False


# Allocations between two collections of the youngest generation (Python's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def settle_garbage_collector() -> None:
    """Leave what the worker loaded at startup out of every later collection, and collect the
    young generation less often. litellm alone brings about 300,000 objects: each full
    collection walked them all (a pause of 150-250 ms for every request in the worker), and
    the default threshold ran a young collection every few requests."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
