import contextlib
import os
import tempfile
from pathlib import Path

from django.core.management.base import CommandError

from pantheon.commands import ProjectCommand, user_named
from sessions_app.exports import Exported, user_export


class Command(ProjectCommand):
    help = (
        "Export everything Pantheon holds about a user, for a subject access or data "
        "portability request: one JSON document with the account (never its password hash or "
        "API token), their agents with their role prompts, rooms and seats, sessions with "
        "their turns, messages, context audits and summaries, Idempotency-Keys, usage ledger "
        "rows and monthly totals, and the console's history of them. Chats they deleted and "
        "purge_deleted_chats has not erased yet are included, each marked with its deleted_at "
        "(--exclude-deleted leaves them out). Written to stdout, or with --output to a file "
        "readable by its owner only, written whole or not at all; then one line on stderr "
        "(with --output, on stdout; with -v 0 nothing). Reads row by row: memory stays flat "
        "however many turns. Exit 0 when done, 1 when no user has that username or the file "
        "cannot be written, 2 on a usage error, 3 when the database fails, 141 (no traceback) "
        "when stdout's reader stops reading, as `| head` does."
    )
    requires_migrated_database = True

    def add_arguments(self, parser):
        parser.add_argument(
            "username", help="the user's username, as they log in with it (its case matters)"
        )
        parser.add_argument(
            "--output",
            metavar="FILE",
            help="write the document to FILE (mode 0600, replaced whole once complete) "
            "instead of stdout",
        )
        parser.add_argument(
            "--exclude-deleted",
            action="store_true",
            help="leave out the sessions and rooms the user deleted that are not purged yet "
            "(default: included, marked with their deleted_at)",
        )

    def handle(self, *args, username, output=None, exclude_deleted=False, verbosity=1, **options):
        user = user_named(username)
        username = user.get_username()
        include_deleted = not exclude_deleted
        if output is None:
            exported = user_export(
                user=user, out=_Unended(self.stdout), include_deleted=include_deleted
            )
            where, said_on = "stdout", self.stderr
        else:
            exported = _export_to_file(Path(output), user=user, include_deleted=include_deleted)
            where, said_on = output, self.stdout
        if verbosity == 0:
            return
        deleted = (
            f", {exported.deleted_sessions} of them deleted"
            if include_deleted and exported.deleted_sessions
            else ""
        )
        said_on.write(
            f"Exported {username!r} (user {user.pk}) to {where}: {exported.agents} agent(s), "
            f"{exported.rooms} room(s), {exported.sessions} session(s){deleted} "
            f"({exported.turns} turn(s), {exported.messages} message(s)), "
            f"{exported.ledger_rows} ledger row(s), {exported.history_entries} history "
            "entr(y/ies)."
        )


def _export_to_file(path: Path, *, user, include_deleted: bool) -> Exported:
    """The document in a file of its own beside `path` (mode 0600, as `mkstemp` makes it), moved
    onto `path` once written and synced: a reader never sees half a document, and a failure
    (the database's, the disk's) leaves no file behind."""
    directory = path.parent
    try:
        handle, scratch = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror}", returncode=1) from exc
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            exported = user_export(user=user, out=out, include_deleted=include_deleted)
            out.flush()
            os.fsync(out.fileno())
        os.replace(scratch, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(scratch)
        if isinstance(exc, OSError):
            raise CommandError(f"cannot write {path}: {exc.strerror}", returncode=1) from exc
        raise
    with contextlib.suppress(OSError):  # the rename itself, durable
        directory_handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_handle)
        finally:
            os.close(directory_handle)
    return exported


class _Unended:
    """The command's stdout, written as it is given: Django's wrapper ends each write with a
    newline of its own."""

    def __init__(self, wrapped) -> None:
        self.wrapped = wrapped

    def write(self, text: str) -> None:
        self.wrapped.write(text, ending="")
