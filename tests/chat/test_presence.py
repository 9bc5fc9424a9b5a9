"""Presence's rules on both backends: its scripts' Lua on real Redis and their Python twins in process memory."""

import asyncio

import pytest

from chat.presence import Presence, PresenceRegistry
from core.keyvalue import MemoryKeyValue, RedisKeyValue

ALICE = {"id": 7, "username": "alice"}
BOB = {"id": 8, "username": "bob"}


@pytest.fixture(params=["redis", "memory"])
def registry(request, settings):
    settings.CHAT_PRESENCE_TTL_SECONDS = 1
    keyvalue = RedisKeyValue(settings.REDIS_URL) if request.param == "redis" else MemoryKeyValue()
    return PresenceRegistry(keyvalue, "test")


async def test_users_arrive_and_leave_once_whatever_their_connections(registry):
    alice_tab, alice_other_tab, bob = (
        Presence(1, 7, "alice", "chan-a1"),
        Presence(1, 7, "alice", "chan-a2"),
        Presence(1, 8, "bob", "chan-b"),
    )
    assert await registry.join(alice_tab)
    assert not await registry.join(alice_other_tab)  # a second tab is not a new arrival
    assert await registry.join(bob)
    assert await registry.online(1) == [ALICE, BOB]
    assert await registry.online(2) == []

    assert not await registry.leave(alice_tab)  # her other tab is still there
    assert not await registry.leave(alice_tab)  # gone already: announced once
    assert await registry.leave(bob)
    assert await registry.online(1) == [ALICE]


async def test_silent_connections_are_swept_and_a_swept_one_does_not_come_back(registry):
    alice, bob = Presence(1, 7, "alice", "chan-a"), Presence(1, 8, "bob", "chan-b")
    await registry.join(alice)
    await registry.join(bob)
    await asyncio.sleep(0.6)
    await registry.heartbeat(bob)
    await asyncio.sleep(0.6)  # alice's connection expired, bob's was refreshed
    assert await registry.sweep(1) == [ALICE]
    assert await registry.sweep(1) == []

    await registry.heartbeat(alice)  # her leave was announced: a late heartbeat must not bring her back
    assert await registry.online(1) == [BOB]
