"""Where the API lives, said once: the middlewares, the URLconf, the versions and the links they build read it here."""

API_PREFIX = "/api/"
# Each version's root, without the trailing slash: "/api/v2" + "/jobs/12".
API_V1 = f"{API_PREFIX}v1"
API_V2 = f"{API_PREFIX}v2"
