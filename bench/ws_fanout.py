"""WebSocket fan-out benchmark: rooms of N clients spread over two server processes, one sender at a fixed rate.

For each channel layer and room size it reports delivered messages/s, p50 and p99 send-to-receive latency, lost
messages, and the server memory each idle connection costs. The servers run as in production (`manage.py serve`),
against PostgreSQL and Redis, on loopback only; everything is bounded in time.

    .venv/bin/python bench/ws_fanout.py                       # sizes 10,100,500 at 50 msg/s for 10 s, both layers
    .venv/bin/python bench/ws_fanout.py --sizes 100 --layers redis --seconds 5

Needs PostgreSQL (BENCH_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/bench_chat, recreated) and
Redis (BENCH_REDIS_URL, default redis://127.0.0.1:6379/8, flushed).
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis
import uvloop
import websockets

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/bench_chat")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
ROOM = "fanout"


def server_env(layer: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": REDIS_URL,
        "CHANNEL_LAYER": layer,
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "benchmark-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": "WARNING",
        # The sender publishes far faster than a person: lift the per-connection limit for it.
        "CHAT_MESSAGE_RATE": "10000",
        "CHAT_MESSAGE_BURST": "10000",
    }


def recreate_database() -> None:
    parts = urlsplit(DATABASE_URL)
    name = parts.path.lstrip("/")
    admin_url = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    env = server_env("redis")
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)


def prepare_users(count: int) -> list[int]:
    """Users and the room, written through the project's own models (the bench process is a Django process)."""
    os.environ.update(server_env("redis"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from accounts.models import User
    from chat.models import Room

    Room.objects.get_or_create(slug=ROOM, defaults={"name": "Fan-out"})
    User.objects.bulk_create(
        [User(username=f"fan{i}", email=f"fan{i}@example.com") for i in range(count)], ignore_conflicts=True
    )
    return list(User.objects.filter(username__startswith="fan").order_by("id").values_list("id", flat=True))


async def ticket_for(user_id: int) -> str:
    """A ticket issued just before it is used: they live 30 s, and opening 500 sockets takes longer."""
    from accounts.models import User
    from chat.services import ticket_issue

    return await ticket_issue(user=await User.objects.aget(pk=user_id))


class Server:
    def __init__(self, port: int, layer: str) -> None:
        self.port = port
        self.process = subprocess.Popen(
            [PYTHON, "manage.py", "serve", "--port", str(port), "--drain-seconds", "0"],
            cwd=ROOT,
            env=server_env(layer),
        )

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.2)
        raise RuntimeError(f"server on port {self.port} did not start")

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


class Receiver:
    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.latencies: list[float] = []

    async def run(self, socket) -> None:
        async for frame in socket:
            event = json.loads(frame)
            if event["type"] == "message" and event["id"] not in self.seen:
                self.seen.add(event["id"])
                self.latencies.append(time.perf_counter() - float(event["text"].split(":", 1)[1]))


async def open_socket(port: int, ticket: str):
    socket = await websockets.connect(f"ws://127.0.0.1:{port}/ws/chat/{ROOM}/?ticket={ticket}", max_size=None)
    welcome = json.loads(await asyncio.wait_for(socket.recv(), 30))
    assert welcome["type"] == "welcome", welcome
    return socket


async def run_room(servers: list[Server], size: int, rate: int, seconds: float, user_ids: list[int]) -> dict:
    baseline = [server.rss_bytes() for server in servers]
    sockets = []
    for index, user_id in enumerate(user_ids[1 : size + 1]):  # receivers alternate between the two processes
        sockets.append(await open_socket(servers[index % 2].port, await ticket_for(user_id)))
    await asyncio.sleep(1)
    per_connection = (sum(server.rss_bytes() for server in servers) - sum(baseline)) / size

    receivers = [Receiver() for _ in sockets]
    reading = [asyncio.create_task(receiver.run(socket)) for receiver, socket in zip(receivers, sockets, strict=True)]
    sender = await open_socket(servers[0].port, await ticket_for(user_ids[0]))
    acked: set[int] = set()

    async def read_acks() -> None:
        async for frame in sender:
            event = json.loads(frame)
            if event["type"] == "ack":
                acked.add(event["id"])

    ack_reader = asyncio.create_task(read_acks())
    sent = int(rate * seconds)
    started = time.perf_counter()
    for sequence in range(sent):
        # Fixed schedule, not "sleep after each send": a slow send does not lower the offered rate.
        delay = started + sequence / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        text = f"{sequence}:{time.perf_counter()}"
        await sender.send(json.dumps({"type": "message", "text": text, "client_id": str(uuid.uuid4())}))
    for _ in range(100):  # up to 10 s for the tail to arrive
        if len(acked) >= sent and all(len(receiver.seen) >= sent for receiver in receivers):
            break
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - started

    for task in [*reading, ack_reader]:
        task.cancel()
    for socket in [*sockets, sender]:
        await socket.close()

    latencies = sorted(latency for receiver in receivers for latency in receiver.latencies)
    delivered = sum(len(receiver.seen) for receiver in receivers)
    return {
        "clients": size,
        "sent": sent,
        "acked": len(acked),
        "delivered_per_s": delivered / elapsed,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan"),
        "lost": size * sent - delivered,
        "idle_kib_per_connection": per_connection / 1024,
    }


async def main(args, user_ids: list[int]) -> None:
    rows = []
    for layer in args.layers:
        redis.Redis.from_url(REDIS_URL).flushdb()
        servers = [Server(port, layer) for port in (8601, 8602)]
        try:
            for server in servers:
                await server.wait_ready()
            for size in args.sizes:
                result = await run_room(servers, size, args.rate, args.seconds, user_ids)
                rows.append({"layer": layer, **result})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            for server in servers:
                server.stop()
    print()
    print(f"{args.rate} msg/s for {args.seconds:g} s, two server processes, one sender; {time.strftime('%Y-%m-%d')}")
    print()
    print("| layer | clients | delivered msg/s | p50 ms | p99 ms | lost | idle KiB/connection |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['layer']} | {row['clients']} | {row['delivered_per_s']:.0f} | {row['p50_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | {row['lost']} | {row['idle_kib_per_connection']:.0f} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=lambda raw: [int(part) for part in raw.split(",")], default=[10, 100, 500])
    parser.add_argument("--rate", type=int, default=50, help="messages per second from the sender")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--layers", type=lambda raw: raw.split(","), default=["redis", "redis-pubsub"])
    arguments = parser.parse_args()
    recreate_database()
    uvloop.run(main(arguments, prepare_users(max(arguments.sizes) + 1)))
