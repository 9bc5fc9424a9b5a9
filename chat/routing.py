from django.urls import path, re_path

from chat.consumers import ChatConsumer, NoRouteConsumer, NotificationConsumer

websocket_urlpatterns = [
    path("ws/chat/<room_slug:slug>/", ChatConsumer.as_asgi()),
    path("ws/notifications/", NotificationConsumer.as_asgi()),
    # Last: whatever the routes above do not match.
    re_path(r"", NoRouteConsumer.as_asgi()),
]
