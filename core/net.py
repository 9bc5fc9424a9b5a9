"""Who is calling: the client address, honouring only as many X-Forwarded-For hops as we have proxies."""

from django.conf import settings


def client_ip(request) -> str:
    trusted_proxies = settings.TRUSTED_PROXY_COUNT
    if trusted_proxies:
        hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
        # Each trusted proxy appends the address it saw; anything further left could be forged by the client.
        if len(hops) >= trusted_proxies:
            return hops[-trusted_proxies]
    return request.META.get("REMOTE_ADDR") or "unknown"
