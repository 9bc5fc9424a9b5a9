from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from config.api import api_v1, api_v2
from core.health import health, ready
from core.metrics import metrics_view
from core.paths import API_V1, API_V2

# Models that moved out of the posts app into their own: old bookmarks of their admin pages go to the new ones.
MOVED_ADMIN_PAGES = {
    "posts/job": "jobs/job",
    "posts/webhookendpoint": "webhooks/webhookendpoint",
    "posts/webhookdelivery": "webhooks/webhookdelivery",
}

urlpatterns = [
    path("health", health, name="health"),
    path("ready", ready, name="ready"),
    path("metrics", metrics_view, name="metrics"),
    path(f"{API_V1.lstrip('/')}/", api_v1.urls),
    path(f"{API_V2.lstrip('/')}/", api_v2.urls),
    *(
        re_path(
            rf"^{settings.ADMIN_URL}{old}/(?P<rest>.*)$",
            RedirectView.as_view(url=f"/{settings.ADMIN_URL}{new}/%(rest)s", permanent=True, query_string=True),
        )
        for old, new in MOVED_ADMIN_PAGES.items()
    ),
    path(settings.ADMIN_URL, admin.site.urls),
    path("", include("chat.urls")),
]
