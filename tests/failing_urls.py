"""A URLconf for tests of the last-resort error handler: the project's URLs plus one endpoint that crashes."""

from django.urls import path
from ninja import NinjaAPI

from config.api import install_error_handlers
from config.urls import urlpatterns as project_urlpatterns
from core.renderers import ORJSONRenderer

crashing_api = NinjaAPI(urls_namespace="crashing", renderer=ORJSONRenderer())
install_error_handlers(crashing_api)


@crashing_api.get("/boom")
async def boom(request):
    raise RuntimeError("an unexpected failure with a secret: hunter2")


urlpatterns = [*project_urlpatterns, path("crashing/", crashing_api.urls)]
