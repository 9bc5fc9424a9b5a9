"""The project's URLs plus `/slow?seconds=N`, an async view that sleeps N seconds, then answers 200."""

import asyncio

from django.http import JsonResponse
from django.urls import path

from config.urls import urlpatterns as project_urlpatterns


async def slow(request):
    seconds = float(request.GET.get("seconds", "1"))
    await asyncio.sleep(seconds)
    return JsonResponse({"slept": seconds})


urlpatterns = [path("slow", slow), *project_urlpatterns]
