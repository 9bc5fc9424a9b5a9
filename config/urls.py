from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from config.api import api_v1, api_v2
from core.health import health, ready
from core.metrics import metrics_view

urlpatterns = [
    path("health", health, name="health"),
    path("ready", ready, name="ready"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", api_v1.urls),
    path("api/v2/", api_v2.urls),
    path(settings.ADMIN_URL, admin.site.urls),
    path("", include("chat.urls")),
]
