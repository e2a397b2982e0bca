from rest_framework.routers import SimpleRouter

from rooms import api

router = SimpleRouter(trailing_slash=False, use_regex_path=False)
router.register("agents", api.AgentViewSet, basename="agent")
router.register("rooms", api.RoomViewSet, basename="room")

urlpatterns = router.urls
