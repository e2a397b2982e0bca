from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import CommandError
from django.db import transaction

from pantheon.commands import ProjectCommand
from rooms.models import Room, RoomMode
from rooms.selectors import agents_for_user
from rooms.services import agent_create, room_create
from sessions_app.models import Session
from sessions_app.services import session_create_in_room

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "pantheon-demo"

AGENTS = [
    ("ada", "Ada", "deepseek", "Research analyst: finds facts, sources and numbers."),
    ("linus", "Linus", "llama", "Software engineer: designs systems and writes code."),
    ("grace", "Grace", "qwen", "Reviewer: critiques plans, spots risks and bugs."),
    ("marie", "Marie", "gpt_oss", "Scientist: forms hypotheses and designs experiments."),
]

ROOMS = [
    ("Tag room", RoomMode.MANUAL, "Ask one agent at a time by tagging them, e.g. @ada."),
    ("Roundtable", RoomMode.ROUNDTABLE, "Every agent answers in turn and builds on the others."),
    ("Orchestrated", RoomMode.ORCHESTRATOR, "A manager model picks who should answer."),
]


class Command(ProjectCommand):
    help = (
        f"Create the demo user, four agents and one room per mode with a session (idempotent). "
        f"The user is a superuser with the published password {DEMO_PASSWORD!r}: for a local "
        "demo only, never on a server others can reach. With DEBUG off (a server's setting) it "
        "refuses to create that user unless told --allow-published-password: exit 1, nothing "
        "written. Prints two lines; with -v 0 only the creation of the demo user. Exit 0 when "
        "done, 2 on a usage error, 3 when the database fails."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--allow-published-password",
            action="store_true",
            help=(
                "create the demo superuser even with DEBUG off (a demo server on purpose; "
                "anyone who reads this help can then log in as it)"
            ),
        )

    @transaction.atomic
    def handle(self, *args, **options):
        User = get_user_model()
        user, created = User.objects.get_or_create(
            username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True}
        )
        if created and not settings.DEBUG and not options["allow_published_password"]:
            # Rolled back with the rest of the command: nothing is written.
            raise CommandError(
                f"refused: DEBUG is off, as on a server, and the demo user would be a superuser "
                f"with the published password {DEMO_PASSWORD!r}. Run it with DEBUG=true for a "
                "local demo, or pass --allow-published-password to create it anyway."
            )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
            user.groups.add(*Group.objects.filter(name="Owner"))
            self.stdout.write(
                f"Created demo user: username {DEMO_USERNAME}, password {DEMO_PASSWORD} "
                "(superuser: for a local demo only)"
            )
        elif options["verbosity"] > 0:
            self.stdout.write(f"Demo user {DEMO_USERNAME} exists; its password was left alone.")
        if not user.is_active:
            # `make run` prints the demo's credentials next: they would open nothing.
            self.stderr.write(
                f"Warning: the demo user {DEMO_USERNAME} is closed (Active unticked in the "
                "console): it cannot log in until Active is ticked again on its page."
            )

        agents = []
        for key, name, alias, role in AGENTS:
            agent = agents_for_user(user=user).filter(agent_key=key).first()
            if agent is None:
                agent = agent_create(
                    owner=user, agent_key=key, name=name, model_alias=alias, role_prompt=role
                )
            agents.append(agent)

        rooms_created = 0
        for name, mode, goal in ROOMS:
            room = Room.objects.alive().filter(owner=user, name=name).first()
            if room is None:
                rooms_created += 1
                room = room_create(
                    owner=user,
                    name=name,
                    goal=goal,
                    mode=mode,
                    agent_ids=[agent.id for agent in agents],
                )
            if not Session.objects.alive().filter(room=room).exists():
                session_create_in_room(room=room, user=user, title=f"{name} demo")

        if options["verbosity"] == 0:
            return  # only a superuser with the published password is worth a line then
        self.stdout.write(
            f"Demo data ready: {len(agents)} agents, {len(ROOMS)} rooms "
            f"({rooms_created} new), one session each."
        )
