from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "sessions_app"
    verbose_name = "Sessions"

    def ready(self) -> None:
        from rooms.models import Agent, Room
        from rooms.signals import agent_deleting, room_deleting
        from sessions_app.services import direct_sessions_keep_agent_name, room_turns_cancel

        # A deleted room's sessions go with it, and their running turns end (rooms cannot call
        # sessions_app: its import contract).
        room_deleting.connect(room_turns_cancel, sender=Room, dispatch_uid="room_turns_cancel")
        # A deleted agent's direct sessions without a title keep its name as their title.
        agent_deleting.connect(
            direct_sessions_keep_agent_name,
            sender=Agent,
            dispatch_uid="direct_sessions_keep_agent_name",
        )
