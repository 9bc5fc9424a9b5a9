from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self):
        from django.urls import register_converter

        from chat.converters import RoomSlugConverter

        # Before any URLconf or socket route that names it is loaded.
        register_converter(RoomSlugConverter, "room_slug")
