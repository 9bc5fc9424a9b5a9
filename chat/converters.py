"""The room slug in URLs (pages, sockets): letters and digits of any script, '-' and '_'; what chat.services.room_slug
makes. Django's own `slug` converter is ASCII-only. Registered as `room_slug` by ChatConfig.ready()."""


class RoomSlugConverter:
    regex = r"[-\w]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value
