"""The API against its own OpenAPI schema: schemathesis, `--checks all`, on a live server.

The server is the one production runs (gunicorn with `gunicorn.conf.py`, its uvicorn worker
and the production settings) on 127.0.0.1 and a free port, on the test PostgreSQL database,
with the offline demo LLM backend. The caller is a user who owns agents, rooms in every mode,
room and direct sessions and their turns; their ids (and their credentials, and messages that
tag a seated agent) are given to schemathesis as dictionaries, so most requests reach real
objects instead of 404s. A 5xx, a status or body the schema does not document, accepted
invalid data or refused valid data fails the test; so does a 5xx in the server's own access
log, or any line it logs at ERROR.

Every phase runs (examples, coverage, fuzzing, stateful). `make check` runs at most 10 examples
per operation (SCHEMATHESIS_MAX_EXAMPLES), about half a minute; `make fuzz` runs 200 per
operation. The test prints schemathesis' report and the server's count of requests per
operation.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, forget_throttle_history, postgres_url
from rooms import services as room_services
from rooms.models import RoomMode
from sessions_app import services as session_services
from usage.models import ModelAlias

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10"))
PHASES = os.environ.get("SCHEMATHESIS_PHASES", "examples,coverage,fuzzing,stateful")
SEED = os.environ.get("SCHEMATHESIS_SEED", "20261125")
# One worker: with several threads, Python 3.11.7's `ast` (which Hypothesis uses to describe
# lambdas) sometimes fails with "AST constructor recursion depth mismatch", an error in the
# tool, not in the API.
WORKERS = os.environ.get("SCHEMATHESIS_WORKERS", "1")
# CI must stay well under its limit; `make fuzz` may take as long as it needs.
TIMEOUT_SECONDS = int(os.environ.get("SCHEMATHESIS_TIMEOUT", "900"))
ST = Path(sys.executable).with_name("st")
SUMMARY_EVERY_TURNS = 8

# positive_data_acceptance wants every schema-valid request accepted. These refusals depend on
# state that no request schema can express, so each is allowed on its operation and nowhere else.
STATE_DEPENDENT_REFUSALS = {
    # credentials that do not exist
    ("/api/v1/auth/token", "POST"): ["400"],
    # a current password that is not the caller's, a new one the password rules refuse (its
    # current password is given no dictionary: the run's one token must outlive it)
    ("/api/v1/auth/password", "POST"): ["400"],
    # an agent_key the caller already uses (unique per owner)
    ("/api/v1/agents", "POST"): ["400"],
    ("/api/v1/agents/{id}", "PATCH"): ["400"],
    # agent_ids that are not the caller's own agents
    ("/api/v1/rooms", "POST"): ["400"],
    ("/api/v1/rooms/{id}/agents", "PUT"): ["400"],
    # a calendar date that does not exist (30 February), or `to` not after `from`
    ("/api/v1/usage", "GET"): ["400"],
    # the room's mode and roster (no tagged agent, no agents), the credit cap, the context
    # budget: the turn's documented 402 and 422 refusals
    ("/api/v1/sessions/{session_id}/turns", "POST"): ["402", "422"],
}
# How often a bound parameter takes a dictionary value rather than a generated one: mostly real
# ids (a random one is a 404, which tests little), and always the fuzzer's own credentials (a
# random username is a 400 that says nothing about the schema).
PROBABILITY = {"usernames": 1.0, "passwords": 1.0}
POSITIVE_DEFAULT_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "429"]


def _fuzz_world(base_url: str) -> dict[str, list[str]]:
    """A caller who owns one of everything; returns the ids schemathesis should try."""
    user = get_user_model().objects.create_user(username="fuzzer", password="fuzzer-pass-123")
    token = Token.objects.create(user=user)
    agents = [
        room_services.agent_create(
            owner=user,
            agent_key=key,
            name=key.title(),
            model_alias="deepseek",
            role_prompt=f"{key.title()} answers briefly.",
        )
        for key in ("ada", "linus", "grace")
    ]
    agent_ids = [agent.id for agent in agents]
    rooms = [
        room_services.room_create(owner=user, name=f"{mode} room", mode=mode, agent_ids=agent_ids)
        for mode in (RoomMode.ROUNDTABLE, RoomMode.ORCHESTRATOR, RoomMode.MANUAL)
    ]
    sessions = [session_services.session_create_in_room(room=room, user=user) for room in rooms]
    sessions.append(session_services.session_create_direct(agent=agents[0], user=user))
    # Through the API, as a client would: the turn engine's internals are not this test's.
    # The direct session gets enough turns for a summary.
    turns = [
        httpx.post(
            f"{base_url}/api/v1/sessions/{session.id}/turns",
            json={"message": f"@ada hello {n}"},
            headers={"Authorization": f"Token {token.key}"},
            timeout=30,
        ).json()
        for session in sessions
        for n in range(SUMMARY_EVERY_TURNS if session.agent_id else 1)
    ]
    return {
        "token": [token.key],
        "agents": [str(agent.id) for agent in agents],
        "rooms": [str(room.id) for room in rooms],
        "sessions": [str(session.id) for session in sessions],
        "turns": [turn["id"] for turn in turns],
        "summarized_sessions": [str(session.id) for session in sessions if session.agent_id],
        "aliases": sorted(ModelAlias.objects.filter(enabled=True).values_list("alias", flat=True)),
    }


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{value}"' for value in values) + "]"


def _config(world: dict[str, list[str]]) -> str:
    by_path = {
        "/api/v1/agents/{id}": {"path.id": "agents"},
        "/api/v1/agents/{agent_id}/sessions": {"path.agent_id": "agents"},
        "/api/v1/rooms/{id}": {"path.id": "rooms"},
        "/api/v1/rooms/{id}/mode": {"path.id": "rooms"},
        "/api/v1/rooms/{id}/agents": {"path.id": "rooms", "body.agent_ids[*]": "agents"},
        "/api/v1/rooms": {"body.agent_ids[*]": "agents"},
        "/api/v1/rooms/{room_id}/sessions": {"path.room_id": "rooms"},
        "/api/v1/sessions/{id}": {"path.id": "sessions"},
        "/api/v1/sessions/{session_id}/messages": {"path.session_id": "sessions"},
        "/api/v1/sessions/{session_id}/summary": {"path.session_id": "summarized_sessions"},
        "/api/v1/sessions/{session_id}/turns": {
            "path.session_id": "sessions",
            "body.message": "tagged_messages",
        },
        "/api/v1/turns/{id}": {"path.id": "turns"},
        "/api/v1/turns/{id}/events": {"path.id": "turns"},
        "/api/v1/auth/token": {"body.username": "usernames", "body.password": "passwords"},
    }
    operations = [
        # One filter (`include-name`, "METHOD /path"): several include filters are or-ed.
        f'[[operations]]\ninclude-name = "{method} {path}"\n'
        "checks.positive_data_acceptance.expected-statuses = "
        f"{_toml_list(POSITIVE_DEFAULT_STATUSES + extra)}\n"
        for (path, method), extra in STATE_DEPENDENT_REFUSALS.items()
    ]
    for path, bindings in by_path.items():
        parameters = ", ".join(
            f'"{key}" = {{ dictionary = "{name}", probability = {PROBABILITY.get(name, 0.9)} }}'
            for key, name in bindings.items()
        )
        operations.append(
            f'[[operations]]\ninclude-path = "{path}"\nparameters = {{ {parameters} }}\n'
        )
    return textwrap.dedent(
        f"""
        seed = {SEED}
        headers = {{ Authorization = "Token {world["token"][0]}" }}

        # Every run starts from the seed alone: no state carried over from an earlier run.
        [cache]
        enabled = false

        [generation]
        max-examples = {MAX_EXAMPLES}
        # PostgreSQL text cannot hold NUL, so every field refuses it with 400
        # `invalid_characters` (pantheon/tests/test_hostile_input.py proves it); a string
        # schema cannot say "no NUL" short of a pattern on every field.
        allow-x00 = false

        [phases.stateful]
        max-steps = 10

        # Ids seen in earlier responses are drawn for DELETE too, and once deleted they are
        # filtered out; that filtering ends a DELETE's fuzzing after a few dozen cases. The
        # dictionaries give DELETE its ids instead.
        [[operations]]
        include-method = "DELETE"
        phases.fuzzing.extra-data-sources.responses = false

        # Signing out and rotating end the one token every request of the run carries: all
        # that followed would be 401 (pantheon/tests/test_api_token_sign_out.py covers them).
        [[operations]]
        include-name = "DELETE /api/v1/auth/token"
        enabled = false
        [[operations]]
        include-name = "POST /api/v1/auth/token/rotate"
        enabled = false

        [dictionaries.agents]
        values = {_toml_list(world["agents"])}
        [dictionaries.rooms]
        values = {_toml_list(world["rooms"])}
        [dictionaries.sessions]
        values = {_toml_list(world["sessions"])}
        [dictionaries.summarized_sessions]
        values = {_toml_list(world["summarized_sessions"])}
        [dictionaries.turns]
        values = {_toml_list(world["turns"])}
        [dictionaries.usernames]
        values = ["fuzzer"]
        [dictionaries.passwords]
        values = ["fuzzer-pass-123"]
        [dictionaries.tagged_messages]
        values = ["@ada what next?", "@linus @grace compare notes", "@grace hello"]
        """
    ) + "\n".join(operations)


@pytest.fixture
def production_server(transactional_db, tmp_path):
    """The app as production serves it, on the test database (which holds committed rows:
    `transactional_db`); what it logs goes to a file the test reads."""
    server = AppServer(
        database_url=postgres_url(connection.settings_dict),
        log_path=tmp_path / "server.log",
        env={
            "LOG_LEVEL": "INFO",
            # The run should reach the logic behind logins and turns, not their throttles
            # (which test_throttling.py covers): lift the limits for it.
            "PANTHEON_TURN_RATE": "100000/min",
            "PANTHEON_AUTH_RATE_PER_IP": "100000/min",
            "PANTHEON_AUTH_RATE_PER_USERNAME": "100000/min",
            "PANTHEON_API_RATE": "100000/min",
            "PANTHEON_CREATE_RATE": "100000/min",
            "PANTHEON_INVALID_TOKEN_RATE": "100000/min",
        },
    )
    with server:
        yield server
    # Thousands of logins, turns and requests, counted against the next tests otherwise.
    forget_throttle_history()


# The seeded aliases are restored after the run.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_api_keeps_the_promises_of_its_schema(production_server, tmp_path):
    world = _fuzz_world(production_server.url)
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(world))

    command = [
        str(ST),
        "--config-file",
        str(config),
        "run",
        f"{production_server.url}/api/schema/",
        "--checks",
        "all",
        "--phases",
        PHASES,
        "--no-color",
        "--workers",
        WORKERS,
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
        # More options, e.g. SCHEMATHESIS_ARGS="--include-method DELETE" for one kind of call.
        *shlex.split(os.environ.get("SCHEMATHESIS_ARGS", "")),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
    )
    schema = httpx.get(f"{production_server.url}/api/schema/?format=json")
    production_server.stop()  # its log is complete

    logged = server_log(production_server.log_path)
    served = [
        (line["method"], line["path"], line["status_code"])
        for line in logged
        if line.get("logger") == "pantheon.request"
    ]
    print(result.stdout[-20000:])
    print(requests_by_operation(served, schema))
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    # The server's own count, whatever schemathesis concluded.
    assert [line for line in served if line[2] >= 500] == []
    assert [line for line in logged if line.get("level") in ("ERROR", "CRITICAL")] == []


def server_log(path: Path) -> list[dict]:
    """The server's JSON log lines (one object a line; gunicorn's own lines are skipped)."""
    lines = []
    for text in path.read_text().splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    return lines


def requests_by_operation(served: list[tuple[str, str, int]], schema_response) -> str:
    """A table of requests per documented operation (with how many were 2xx and 4xx)."""
    operations = [
        (method.upper(), path, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"))
        for path, methods in schema_response.json()["paths"].items()
        for method in methods
    ]
    counts = Counter()
    probes = Counter()
    for method, path, status in served:
        label = next(
            (f"{m} {p}" for m, p, pattern in operations if m == method and pattern.match(path)),
            "(not in the schema: probes)",
        )
        if label.startswith("(not"):
            probes[method, path[:40]] += 1
        counts[label, "all"] += 1
        counts[label, f"{status // 100}xx"] += 1
    labels = sorted({label for label, _ in counts})
    rows = [f"{'operation':<52} {'requests':>8} {'2xx':>6} {'4xx':>6} {'5xx':>4}"]
    rows += [
        f"{label:<52} {counts[label, 'all']:>8} {counts[label, '2xx']:>6} "
        f"{counts[label, '4xx']:>6} {counts[label, '5xx']:>4}"
        for label in labels
    ]
    rows.append(f"{'total':<52} {len(served):>8}")
    rows.append(
        "probes: "
        + ", ".join(f"{method} {path} ({count})" for (method, path), count in probes.most_common(6))
    )
    return "\n".join(rows)
