from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "sessions_app"
    verbose_name = "Sessions"

    def ready(self) -> None:
        from rooms.models import Room
        from rooms.signals import room_deleting
        from sessions_app.services import room_turns_cancel

        # A deleted room's sessions go with it, and their running turns end (rooms cannot call
        # sessions_app: its import contract).
        room_deleting.connect(room_turns_cancel, sender=Room, dispatch_uid="room_turns_cancel")
