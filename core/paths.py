"""Where the API lives, said once: the middlewares, the URLconf, the versions and the links they build read it here.

Links in answers (Location headers, a job's download URL) are built by `api_url` from the operations' URL names,
never spelled by hand: reversed in the version the request came through, they stay in that version.
"""

from django.urls import reverse

API_PREFIX = "/api/"
# Each version's root, without the trailing slash: "/api/v2" + "/jobs/12".
API_V1 = f"{API_PREFIX}v1"
API_V2 = f"{API_PREFIX}v2"
# Each version's URL namespace (config/api.py), in which its operations' URL names are reversed.
API_V1_NAMESPACE = "api-1"
API_V2_NAMESPACE = "api-2"


def api_url(url_name: str, *, version: str = API_V2_NAMESPACE, **path_parameters) -> str:
    """The path of an API resource by its operation's URL name ("post", "job", ...) in one version."""
    return reverse(f"{version}:{url_name}", kwargs=path_parameters)


def version_of(request) -> str:
    """The namespace of the API version a request came through."""
    return request.resolver_match.namespace
