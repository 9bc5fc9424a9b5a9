"""WebSocket handshake policy."""

from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    """Refuses browsers on pages outside ALLOWED_HOSTS (cross-site WebSocket hijacking of the session cookie).

    A handshake without an Origin header comes from a non-browser client (browsers always send one); it cannot
    ride on a victim's cookies, so it is let through to authenticate with its ticket like any API client.
    """

    def valid_origin(self, parsed_origin) -> bool:
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)


def browser_origin_validator(application):
    return BrowserOriginValidator(application, settings.ALLOWED_HOSTS)
