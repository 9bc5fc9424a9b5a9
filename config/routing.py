"""WebSocket routes of every app, mounted by config/asgi.py."""

websocket_urlpatterns: list = []
