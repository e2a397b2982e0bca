from django.urls import path

from sessions_app import api

urlpatterns = [
    path("rooms/<uuid:room_id>/sessions", api.RoomSessionsView.as_view(), name="room-sessions"),
    path(
        "agents/<uuid:agent_id>/sessions", api.DirectSessionsView.as_view(), name="agent-sessions"
    ),
    path("sessions/<uuid:pk>", api.SessionDetailView.as_view(), name="session-detail"),
    path(
        "sessions/<uuid:session_id>/messages",
        api.SessionMessagesView.as_view(),
        name="session-messages",
    ),
]
