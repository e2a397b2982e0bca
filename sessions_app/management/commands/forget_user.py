from pantheon.commands import ProjectCommand, user_named
from sessions_app.services import user_forget


class Command(ProjectCommand):
    help = (
        "Forget a user who asked to be: the account is closed and loses what names them "
        "(username forgotten-<id>, names and email blanked, password unusable, API token "
        "revoked, roles taken away); their sessions and rooms are deleted as their own deletes "
        "delete them (a running turn ends as a cancel ends it), and their agents with their "
        "role prompts. The usage ledger keeps every row and figure under the account's id. "
        "Run purge_deleted_chats --older-than 1 a day later to erase their conversations. "
        "Prints one line (--dry-run: what it would do). Exit 0 when done, 1 when no user has "
        "that username, 2 on a usage error, 3 when the database fails."
    )
    requires_migrated_database = True

    def add_arguments(self, parser):
        parser.add_argument(
            "username", help="the user's username, as they log in with it (its case matters)"
        )
        parser.add_argument("--dry-run", action="store_true", help="count, change nothing")

    def handle(self, *args, username, dry_run=False, **options):
        user = user_named(username)
        username = user.get_username()
        forgotten = user_forget(user=user, dry_run=dry_run)
        said = (
            f"delete {forgotten.sessions} session(s), {forgotten.rooms} room(s) and "
            f"{forgotten.agents} agent(s), and end {forgotten.running_turns} running turn(s)"
        )
        if dry_run:
            self.stdout.write(
                f"Would forget {username!r} (user {user.pk}, as {forgotten.username!r}): would "
                f"{said}."
            )
            return
        self.stdout.write(
            f"Forgot {username!r} (user {user.pk}, now {forgotten.username!r}): "
            f"{said.replace('delete', 'deleted', 1).replace('and end', 'and ended', 1)}. "
            "purge_deleted_chats --older-than 1 erases their conversations from tomorrow."
        )
