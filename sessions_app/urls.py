from django.urls import path
from rest_framework.routers import SimpleRouter

from sessions_app import api, api_turns

router = SimpleRouter(trailing_slash=False, use_regex_path=False)
router.register("sessions", api.SessionViewSet, basename="session")

urlpatterns = [
    path("rooms/<id:room_id>/sessions", api.RoomSessionsView.as_view(), name="room-sessions"),
    path("agents/<id:agent_id>/sessions", api.AgentSessionsView.as_view(), name="agent-sessions"),
    path(
        "sessions/<id:session_id>/messages",
        api.SessionMessagesView.as_view(),
        name="session-messages",
    ),
    path(
        "sessions/<id:session_id>/turns",
        api_turns.SessionTurnsView.as_view(),
        name="session-turns",
    ),
    path(
        "sessions/<id:session_id>/summary",
        api.SessionSummaryView.as_view(),
        name="session-summary",
    ),
    path("turns/<id:pk>", api.TurnDetailView.as_view(), name="turn-detail"),
    path("turns/<id:pk>/events", api_turns.TurnEventsView.as_view(), name="turn-events"),
    path("turns/<id:pk>/cancel", api_turns.TurnCancelView.as_view(), name="turn-cancel"),
    *router.urls,
]
