"""A worker that exits leaves its name to the next one gunicorn forks, which ends the turns it
left running (`pantheon.runner`, `pantheon.warmup`); the live kill is in test_turn_crash."""

import logging
import os
import re
import socket
from types import SimpleNamespace

import psycopg
import pytest
from django.urls import reverse
from django.utils import timezone

from pantheon import runner, warmup
from sessions_app.models import Turn

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_runner(monkeypatch):
    """The hooks set this process's name and predecessors: put them back after the test."""
    monkeypatch.setattr(runner, "_name", None)
    monkeypatch.setattr(runner, "_predecessors", ())


def fork(server, pid):
    """What gunicorn's master does for a new worker: pre_fork, then fork (the worker's pid)."""
    worker = SimpleNamespace(pid=None)
    runner.before_fork(server, worker)
    worker.pid = pid
    return worker


def test_the_master_hands_the_names_of_exited_workers_to_the_next_one_it_forks(fresh_runner):
    server = SimpleNamespace()
    first, second = fork(server, 101), fork(server, 102)
    assert first.pantheon_predecessors == second.pantheon_predecessors == ()
    assert first.pantheon_token != second.pantheon_token

    runner.after_exit(server, first)  # killed
    third = fork(server, 103)
    assert third.pantheon_predecessors == (runner.worker_name(101, first.pantheon_token),)
    assert fork(server, 104).pantheon_predecessors == ()  # handed on once

    # In the new worker: its name (host, pid, token) and the names it is to check.
    runner.after_fork(server, third)
    host, pid, token = runner.this_process().split(":")
    assert (pid, token) == ("103", third.pantheon_token)
    assert runner.predecessors() == third.pantheon_predecessors


def test_a_process_not_forked_by_gunicorn_names_itself_and_has_no_predecessors(fresh_runner):
    name = runner.this_process()
    assert name.split(":")[1] != "" and runner.this_process() == name
    host, pid, token = name.split(":")
    assert (host, pid, len(token)) == (socket.gethostname()[:64], str(os.getpid()), 8)
    assert runner.predecessors() == ()


def running_turn(session, worker: str, **fields) -> Turn:
    now = timezone.now()
    return Turn.objects.create(
        session=session,
        turn_index=1,
        mode="direct",
        user_input="hello",
        worker=worker,
        created_at=now,
        progress_at=now,
        **fields,
    )


def test_a_new_worker_ends_the_running_turns_of_its_predecessors_only(
    owner, ada, make_session, fresh_runner, monkeypatch, caplog
):
    dead, alive = "web-1:101:aaaa", "web-1:102:bbbb"
    orphan = running_turn(make_session(owner, agent=ada), dead)  # progress just now
    finished = running_turn(make_session(owner, agent=ada), dead, status="completed")
    live = running_turn(make_session(owner, agent=ada), alive)
    monkeypatch.setattr(runner, "_predecessors", (dead,))

    with caplog.at_level(logging.WARNING, logger="pantheon.warmup"):
        warmup.end_turns_of_exited_workers()

    orphan.refresh_from_db()
    assert (orphan.status, orphan.failure_code) == ("interrupted", "turn_interrupted")
    assert orphan.completed_at is not None
    assert Turn.objects.get(pk=finished.pk).status == "completed"
    assert Turn.objects.get(pk=live.pk).status == "running"  # another worker's, alive
    # Which turns, in words and as a field: it said how many alone, and the operator of a
    # worker killed mid-turn had to find them in the console.
    assert caplog.messages == [
        f"ended 1 turn(s) interrupted by the exit of worker(s) {dead}; 0 call(s) in flight "
        f"marked lost (the provider may have billed them): {orphan.pk}"
    ]
    assert caplog.records[0].turn_ids == [str(orphan.pk)]


def test_a_worker_with_no_predecessors_reads_nothing(
    owner, ada, make_session, fresh_runner, django_assert_num_queries
):
    running_turn(make_session(owner, agent=ada), "")  # a turn of the code before names
    with django_assert_num_queries(0):
        warmup.end_turns_of_exited_workers()
    assert Turn.objects.get().status == "running"


def test_a_turn_records_the_process_that_runs_it(owner_client, owner, ada, make_session, post_turn):
    session = make_session(owner, agent=ada)
    assert post_turn(owner_client, session, "hello").status_code == 201
    assert Turn.objects.get(session=session).worker == runner.this_process()


def test_the_console_shows_which_process_served_a_turn(
    owner, ada, make_session, make_operator, client
):
    turn = running_turn(make_session(owner, agent=ada), "web-1:4242:0badf00d")
    client.force_login(make_operator("Analyst"))
    page = client.get(reverse("admin:sessions_app_turn_change", args=[turn.pk]))
    assert page.status_code == 200
    assert re.search(
        r"Served by:</label>\s*<div class=\"readonly\">web-1:4242:0badf00d<", page.text
    )


def test_a_worker_killed_before_it_checked_its_predecessors_hands_them_on(fresh_runner):
    """Killed during its warm-up (3-9 s: an out-of-memory killer may strike twice), it took
    the names it was given with it, and their turns waited for the stale limit (the soak
    tester's catch: 16 sessions refused for 10 minutes after a kill loop)."""
    server = SimpleNamespace()
    first = fork(server, 101)
    runner.after_exit(server, first)
    second = fork(server, 102)  # given the first's name
    runner.after_exit(server, second)  # killed before its warm-up checked it

    third = fork(server, 103)

    assert set(third.pantheon_predecessors) == {
        runner.worker_name(101, first.pantheon_token),
        runner.worker_name(102, second.pantheon_token),
    }
    runner.after_exit(server, third)
    runner.after_exit(server, third)  # a name is kept once
    assert len(fork(server, 104).pantheon_predecessors) == 3


def test_the_names_kept_are_bounded_and_the_newest_kept(fresh_runner):
    """It kept the oldest: 2 workers through 150 reloads filled the list, and the next worker
    killed was not among the names its replacement got (the second reviewer's catch)."""
    server = SimpleNamespace()
    for pid in range(1000, 1300):
        last = fork(server, pid)
        runner.after_exit(server, last)
    handed = fork(server, 2000).pantheon_predecessors
    assert len(handed) == 100
    assert runner.worker_name(1299, last.pantheon_token) in handed


def test_names_older_than_the_stale_limit_are_dropped(fresh_runner, monkeypatch):
    """Their turns are stale: the next turn of each session takes them over anyway. So is a
    worker that lived past it: it had time to check the names it was given."""
    monkeypatch.setenv("PANTHEON_TURN_STALE_SECONDS", "60")
    server = SimpleNamespace()
    old, young = fork(server, 101), fork(server, 102)
    runner.after_exit(server, old)
    server.pantheon_exited_workers[runner.worker_name(101, old.pantheon_token)] -= 61
    runner.after_exit(server, young)

    given = fork(server, 103)
    assert given.pantheon_predecessors == (runner.worker_name(102, young.pantheon_token),)

    given.pantheon_forked_at -= 61  # lived past the stale limit, then was killed
    runner.after_exit(server, given)
    assert fork(server, 104).pantheon_predecessors == (
        runner.worker_name(103, given.pantheon_token),
    )


def refused() -> Exception:
    """A connection the database refused, as Django raises it (psycopg's error its cause)."""
    from django.db import OperationalError

    try:
        raise OperationalError("connection refused") from psycopg.OperationalError(
            "connection refused"
        )
    except OperationalError as error:
        return error


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_worker_that_finds_the_database_away_keeps_trying(
    owner, ada, make_session, fresh_runner, monkeypatch, caplog
):
    """Down for longer than DB_POOL_TIMEOUT as the replacement warmed up, the names were
    dropped with a warning that the database was not reachable."""
    from sessions_app import services

    dead = "web-1:101:aaaa"
    orphan = running_turn(make_session(owner, agent=ada), dead)
    monkeypatch.setattr(runner, "_predecessors", (dead,))
    monkeypatch.setattr(warmup, "RETRY_SECONDS", (0.01,))
    real = services.turns_of_exited_workers_interrupt
    tries = []

    def away_twice(**names):
        tries.append(names)
        if len(tries) <= 2:
            raise refused()
        return real(**names)

    monkeypatch.setattr(services, "turns_of_exited_workers_interrupt", away_twice)

    assert warmup.keep_trying_to_end_turns_of_exited_workers() is True

    assert len(tries) == 3
    orphan.refresh_from_db()
    assert orphan.status == "interrupted"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_worker_gives_up_at_the_stale_limit_saying_so(
    fresh_runner, monkeypatch, settings, caplog
):
    from sessions_app import services

    settings.PANTHEON_TURN_STALE_SECONDS = 1
    monkeypatch.setattr(runner, "_predecessors", ("web-1:101:aaaa",))
    monkeypatch.setattr(warmup, "RETRY_SECONDS", (0.05,))

    def away(**names):
        raise refused()

    monkeypatch.setattr(services, "turns_of_exited_workers_interrupt", away)

    with caplog.at_level(logging.WARNING, logger="pantheon.warmup"):
        assert warmup.keep_trying_to_end_turns_of_exited_workers() is False
    assert caplog.messages[-1] == (
        "the turns left running by worker(s) web-1:101:aaaa wait for the stale limit: the "
        "database did not answer"
    )


class MasterLog:
    def __init__(self):
        self.lines = []

    def exception(self, message, *args):
        self.lines.append(message % args)


def test_a_worker_forked_before_the_hooks_existed_exits_without_a_word(fresh_runner):
    """A SIGHUP from the code before these hooks reloads gunicorn.conf.py under workers its
    pre_fork never named: the master's child_exit read their token, raised, and the master
    stopped with every worker (the reviewer's catch, reproduced live)."""
    server = SimpleNamespace(log=MasterLog())
    old_worker = SimpleNamespace(pid=99)  # no token, no predecessors

    runner.guarded(runner.after_exit)(server, old_worker)

    assert server.log.lines == []
    assert fork(server, 100).pantheon_predecessors == ()


def test_a_failing_hook_is_logged_not_raised_into_the_master():
    server = SimpleNamespace(log=MasterLog())

    def broken(server, worker):
        raise KeyError("boom")

    runner.guarded(broken)(server, SimpleNamespace(pid=1))

    assert server.log.lines == ["pantheon: gunicorn's broken hook failed"]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_recovery_that_fails_for_another_reason_does_not_fail_the_boot(
    fresh_runner, monkeypatch, caplog
):
    """gunicorn takes an exception while a worker loads its app for a boot error and stops."""
    from sessions_app import services

    monkeypatch.setattr(runner, "_predecessors", ("web-1:101:aaaa",))

    def broken(**names):
        raise ValueError("not a database error")

    monkeypatch.setattr(services, "turns_of_exited_workers_interrupt", broken)

    with caplog.at_level(logging.WARNING, logger="pantheon.warmup"):
        warmup.open_the_pool()

    assert caplog.messages == ["warm-up: the turns of exited workers could not be ended"]
