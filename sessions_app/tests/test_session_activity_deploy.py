"""Migrating to the session activity columns while the release before serves (README: migrate,
then roll the hosts): a turn's claim of that release inserts its turn, and only at its commit
reads its session's row for the foreign key (deferred). 0018 added the columns (an ACCESS
EXCLUSIVE lock on the sessions) and created the trigger (a lock on the turns) in one
transaction: a claim between its insert and its commit deadlocked with it, and PostgreSQL
ended one of the two (a 500 for the turn, or the migration failed)."""

import time

import psycopg
import pytest

from pantheon.tests.test_command_not_migrated import finished, manage, migrated_to
from pantheon.tests.test_migrations_and_setup import new_database

pytestmark = pytest.mark.django_db

SESSION = "00000000-0000-0000-0000-000000000001"


def _waiting_on_a_lock(admin: psycopg.Connection, database: str, but: int) -> bool:
    return bool(
        admin.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND pid <> %s"
            " AND wait_event_type = 'Lock'",
            (database, but),
        ).fetchall()
    )


def test_migrating_beside_a_claim_of_the_release_before_deadlocks_neither():
    with new_database("pantheon_activity_deploy_") as (url, params):
        migrated_to(url, "sessions_app", "0017")
        with psycopg.connect(**params, autocommit=True) as setup:
            row = setup.execute(
                "INSERT INTO auth_user (password, is_superuser, username, first_name,"
                " last_name, email, is_staff, is_active, date_joined)"
                " VALUES ('!', false, 'ada', '', '', '', false, true, now()) RETURNING id"
            ).fetchone()
            assert row is not None
            user = row[0]
            setup.execute(
                "INSERT INTO sessions_app_session (id, title, created_at, started_by_id)"
                " VALUES (%s, '', now(), %s)",
                (SESSION, user),
            )
        with (
            psycopg.connect(**params) as claim,
            psycopg.connect(**params, autocommit=True) as admin,
        ):
            # The claim's insert, its transaction open (the foreign key checked at its commit).
            claim.execute(
                "INSERT INTO sessions_app_turn (id, turn_index, mode, status, user_input,"
                " model_alias_override, roster, llm_calls, input_tokens, output_tokens, credits,"
                " provider_cost_usd, created_at, session_id, progress_at, reserved_credits,"
                " failure_code, worker) VALUES (gen_random_uuid(), 1, 'direct', 'running', 'hi',"
                " '', '[]', 0, 0, 0, 0, 0, now(), %s, now(), 0, '', '')",
                (SESSION,),
            )
            migrating = manage(url, "migrate", "sessions_app", "-v0")
            deadline = time.monotonic() + 60
            while not _waiting_on_a_lock(admin, params["dbname"], claim.info.backend_pid):
                assert migrating.poll() is None, finished(migrating)
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(0.2)
            claim.commit()  # deadlock detected here, or in the migration
            code, stderr = finished(migrating)
            assert code == 0, stderr
            counted = admin.execute(
                "SELECT turn_count FROM sessions_app_session WHERE id = %s", (SESSION,)
            ).fetchone()
            assert counted == (1,)
