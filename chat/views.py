"""The chat pages for people in a browser: the rooms list and a room. They render a shell only; chat.js then talks
to the REST API and the room's WebSocket with the same Django session (CSRF token on writes)."""

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render

from chat import selectors
from core.errors import NotFound
from core.paths import api_url


@login_required
async def rooms(request):
    # The view passes `user` itself: the auth context processor's lazy `request.user` would query the database
    # synchronously inside this async view.
    return render(
        request,
        "chat/rooms.html",
        {
            "user": await request.auser(),
            "rooms": await selectors.room_list(),
            # The page uses the current API version; v1 is deprecated with a sunset date.
            "create_room_url": api_url("create_room"),
        },
    )


@login_required
async def room(request, slug: str):
    try:
        room = await selectors.room_get(slug=slug)
    except NotFound:
        raise Http404("No such room.")
    return render(
        request,
        "chat/room.html",
        {
            "user": await request.auser(),
            "room": room,
            "history_url": api_url("room_messages", slug=room.slug),
            # Channels' routes (chat/routing.py) are not in Django's URL resolver, so this one cannot be reversed.
            "socket_path": f"/ws/chat/{room.slug}/",
        },
    )
