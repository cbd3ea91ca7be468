"""Scale-out: server processes behind a real nginx with deploy/nginx/chat.conf, and the channel
layer spread over several Redis servers.

The nginx tests run two daphnes on Redis and the test database, and nginx in front as
`make cluster` runs it (deploy/cluster.py). conftest deselects them without REDIS_URL
(they fail instead under CHAT_REQUIRE_SERVICES=1); without nginx they fail. The shard tests start two redis-servers of their own.
"""

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
import redis
from channels.db import database_sync_to_async
from channels_redis.utils import _consistent_hash
from django.conf import settings as django_settings
from django.core.management import call_command
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from chat import services
from deploy import cluster
from tests.faults import PrivateRedis, missing
from tests.live import LIVE_ENV, Endpoint, LiveServer, database_url, free_port, run_daphne, start_daphne
from tests.support import ws_connect

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@dataclass
class Cluster:
    front: Endpoint  # nginx
    servers: list[LiveServer]
    nginx: cluster.Nginx
    static_root: object


@pytest.fixture(scope="module")
def nginx_cluster(redis_url, django_db_setup, tmp_path_factory):
    """Two daphnes on Redis and the test database behind nginx, configured as `make cluster` does."""
    if cluster.nginx_binary() is None:
        missing("needs nginx (apt-get install nginx)")
    static_root = tmp_path_factory.mktemp("static")
    with override_settings(STATIC_ROOT=static_root):
        call_command("collectstatic", interactive=False, verbosity=0)
    env = {**LIVE_ENV, "REDIS_URL": redis_url, "DJANGO_NUM_PROXIES": "1"}
    servers = []
    nginx = None
    try:
        servers = [start_daphne(env, args=cluster.DAPHNE_ARGS) for _ in range(2)]
        port = free_port()
        site = cluster.site_config(
            upstreams=[f"127.0.0.1:{s.port}" for s in servers], listen=f"127.0.0.1:{port}", static_root=static_root
        )
        nginx = cluster.Nginx(tmp_path_factory.mktemp("nginx"), site)
        nginx.start()
        try:
            cluster.wait_for_port("127.0.0.1", port, nginx.process, timeout=10)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; nginx's error log:\n{nginx.errors()}") from None
        yield Cluster(Endpoint(port), servers, nginx, static_root)
    finally:
        if nginx is not None:
            nginx.stop()
        for server in servers:
            server.stop()


def get(url: str, headers: dict | None = None):
    with urlopen(Request(url, headers=headers or {}), timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def scrape(server) -> dict[str, float]:
    """One process's /metrics, read from that process directly."""
    _, _, body = get(server.url + "/metrics")
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if "le" not in sample.labels
    }


async def scrape_all(servers) -> list[dict[str, float]]:
    return [await asyncio.to_thread(scrape, server) for server in servers]


# nginx in front


def test_healthz_answers_through_nginx(nginx_cluster):
    status, headers, body = get(nginx_cluster.front.url + "/healthz")
    assert status == 200
    assert headers["Server"].startswith("nginx")
    assert json.loads(body) == {"database": "ok", "channel_layer": "ok"}


def test_nginx_serves_static_files_from_disk(nginx_cluster):
    path = next(p for p in (nginx_cluster.static_root / "chat").rglob("*.js"))
    status, headers, body = get(f"{nginx_cluster.front.url}/static/{path.relative_to(nginx_cluster.static_root)}")
    assert status == 200 and body == path.read_bytes()
    assert headers["Cache-Control"] == "max-age=604800"  # nginx's `expires 7d`, not the server's headers


async def test_two_clients_through_nginx_land_on_both_processes_and_hear_each_other(
    nginx_cluster, alice, bob, general_with_bob
):
    servers = nginx_cluster.servers
    before = await scrape_all(servers)
    a = await ws_connect(nginx_cluster.front, alice)
    b = await ws_connect(nginx_cluster.front, bob)
    middle = await scrape_all(servers)
    # least_conn: the second socket goes to the process that does not hold the first
    assert [m["chat_open_connections"] - s["chat_open_connections"] for s, m in zip(before, middle)] == [1, 1]

    await a.send(type="message.send", room="general", body="from alice", client_id="a1", ref="a")
    sent_by_a = await a.expect("message.new", ref="a")
    assert (await b.expect("message.new"))["message"] == sent_by_a["message"]
    await b.send(type="message.send", room="general", body="from bob", client_id="b1", ref="b")
    sent_by_b = await b.expect("message.new", ref="b")
    assert (await a.expect("message.new"))["message"] == sent_by_b["message"]

    after = await scrape_all(servers)

    # each process counts its own: one message accepted on each, two delivered on each (ack and broadcast)
    def moved(name):
        return [n[name] - m[name] for m, n in zip(middle, after)]

    assert moved("chat_messages_accepted_total") == [1, 1]
    assert moved("chat_messages_delivered_total") == [2, 2]
    await a.close(), await b.close()


def test_a_client_cannot_choose_its_address_with_x_forwarded_for(nginx_cluster, make_user):
    """nginx appends the address it sees, and the servers trust only that last entry
    (DJANGO_NUM_PROXIES=1): a forged header does not escape the login throttle."""
    make_user("dora")
    limit = int(django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["login"].split("/")[0])
    statuses = []
    for i in range(limit + 1):
        body = json.dumps({"username": "dora", "password": "wrong"}).encode()
        request = Request(
            nginx_cluster.front.url + "/api/auth/token/",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "X-Forwarded-For": f"203.0.113.{i}"},
        )
        try:
            with urlopen(request, timeout=10) as response:
                statuses.append(response.status)
        except HTTPError as exc:
            statuses.append(exc.code)
    assert statuses == [401] * limit + [429]


async def test_cluster_script_serves_until_sigterm_then_closes_sockets_with_1001(
    redis_url, alice, bob, general_with_bob, tmp_path
):
    """deploy/cluster.py as `make cluster` and the load tests run it: `ready:` once it serves,
    and SIGTERM stops the servers (their clients get 1001 through nginx), then nginx."""
    if cluster.nginx_binary() is None:
        missing("needs nginx (apt-get install nginx)")
    env = {
        **os.environ,
        **LIVE_ENV,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url(),
        "REDIS_PREFIX": django_settings.REDIS_PREFIX,
    }
    for attempt in range(3):  # the kernel may hand one of the three ports to an outgoing connection meanwhile
        port = free_port()
        while not all(port_bindable(port + i) for i in range(3)):
            port = free_port()
        process = subprocess.Popen(
            [sys.executable, "deploy/cluster.py", "--processes", "2", "--port", str(port)],
            cwd=cluster.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=(tmp_path / "cluster.err").open("w"),  # what it says if it stops early, for the failure
            text=True,
        )
        try:
            ready = await asyncio.wait_for(
                asyncio.to_thread(read_until_ready, process, tmp_path / "cluster.err"), timeout=60
            )
            break
        except BaseException as exc:
            taken = isinstance(exc, AssertionError) and "Address already in use" in str(exc)
            if process.poll() is None:
                process.kill()
            process.wait()
            if attempt == 2 or not taken:
                raise
    try:
        assert ready.startswith(f"ready: http://127.0.0.1:{port}/ -> 2 daphne processes"), ready
        front = Endpoint(port)
        a = await ws_connect(front, alice)
        b = await ws_connect(front, bob)
        process.send_signal(signal.SIGTERM)
        assert await a.close_frame(timeout=15) == (1001, "server shutting down")
        assert await b.close_frame(timeout=15) == (1001, "server shutting down")
        assert await asyncio.to_thread(process.wait, 30) == 0
        assert all(port_is_free(port + i) for i in range(3))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def port_bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def read_until_ready(process, errors=None) -> str:
    for line in process.stdout:
        if line.startswith("ready:"):
            return line.strip()
    said = errors.read_text()[-2000:] if errors is not None and errors.exists() else ""
    raise AssertionError(f"deploy/cluster.py exited with {process.wait()} before it was ready: {said}")


# The channel layer on two Redis shards


def shard_of(group: str, shards: int) -> int:
    """The shard channels-redis picks for `group`'s pub/sub channel (the same in every process)."""
    return _consistent_hash(f"{django_settings.REDIS_PREFIX}.__group__{group}", shards)


@pytest.fixture
def two_shards():
    if not os.access("/usr/bin/redis-server", cluster.os.X_OK):
        missing("needs /usr/bin/redis-server to run two Redis shards")
    shards = [PrivateRedis(), PrivateRedis()]
    try:
        for shard in shards:
            shard.start()
        yield shards
    finally:
        for shard in shards:
            shard.cleanup()


def rooms_on_each_shard(alice, bob) -> list:
    """Rooms whose groups hash to shard 0 and to shard 1, both with alice and bob as members."""
    found = {}
    for i in range(32):
        room = services.room_create(user=alice, name=f"Room {i}", slug=f"room-{i}")
        services.room_join(user=bob, slug=room.slug)
        found.setdefault(shard_of(f"room.{room.pk}", 2), room)
        if len(found) == 2:
            return [found[0], found[1]]
    raise AssertionError("32 rooms all hashed to one shard")


async def test_sharded_layer_carries_each_room_on_its_shard_across_processes(redis_url, two_shards, alice, bob):
    rooms = await database_sync_to_async(rooms_on_each_shard)(alice, bob)
    env = {**LIVE_ENV, "REDIS_URL": redis_url, "REDIS_URLS": ",".join(s.url for s in two_shards)}
    with run_daphne(env) as server_a, run_daphne(env) as server_b:
        a = await ws_connect(server_a, alice)
        b = await ws_connect(server_b, bob)
        for index, (room, shard) in enumerate(zip(rooms, two_shards)):
            # each process subscribed to the room's group on its shard, and only there
            channel = f"{django_settings.REDIS_PREFIX}.__group__room.{room.pk}"
            assert redis.Redis(port=shard.port).pubsub_numsub(channel) == [(channel.encode(), 2)]
            other = two_shards[1 - index]
            assert redis.Redis(port=other.port).pubsub_numsub(channel) == [(channel.encode(), 0)]

            await a.send(
                type="message.send", room=room.slug, body=f"on shard {index}", client_id=f"s{index}", ref=str(index)
            )
            sent = await a.expect("message.new", ref=str(index))
            assert (await b.expect("message.new", room=room.slug))["message"] == sent["message"]
        await a.close(), await b.close()


async def test_a_restarted_shard_closes_every_socket_for_it_to_resume(redis_url, two_shards, alice, bob):
    """The watchdog checks each shard: one that restarts has dropped its groups' subscriptions on
    every process, so every socket is closed with 1012, and clients resume with what they missed."""
    rooms = await database_sync_to_async(rooms_on_each_shard)(alice, bob)
    room = rooms[1].slug
    env = {
        **LIVE_ENV,
        "REDIS_URL": redis_url,
        "REDIS_URLS": ",".join(s.url for s in two_shards),
        "CHAT_LAYER_CHECK_S": "0.2",
    }
    with run_daphne(env) as server_a, run_daphne(env) as server_b:
        a = await ws_connect(server_a, alice)
        b = await ws_connect(server_b, bob)
        two_shards[1].stop()
        two_shards[1].start()
        assert await a.closed(timeout=10) == 1012
        assert await b.closed(timeout=10) == 1012

        async def exchange(attempt: int):
            """alice sends until bob hears one live; bob then has all of them, in order: an event
            published before his process subscribed again is read back when the next one comes."""
            a = await ws_connect(server_a, alice)
            b = await ws_connect(server_b, bob)
            sent = []
            while True:
                key = f"{attempt}.{len(sent)}"
                await a.send(type="message.send", room=room, body=key, client_id=key, ref="r")
                sent.append((await a.expect("message.new", ref="r"))["message"]["id"])
                with contextlib.suppress(TimeoutError):
                    received = [(await b.expect("message.new", room=room, timeout=0.5))["message"]["id"]]
                    break
            await a.send(type="message.send", room=room, body="last", client_id=f"{attempt}.last", ref="r")
            sent.append((await a.expect("message.new", ref="r"))["message"]["id"])
            while received[-1] != sent[-1]:
                received.append((await b.expect("message.new", room=room))["message"]["id"])
            assert received == sent[-len(received) :] and received[0] == sent[0]
            await a.close(), await b.close()

        # A check during the outage closes the sockets, and the first one after it (a new run_id)
        # may close those opened meanwhile once more: clients reconnect after every 1012.
        for attempt in range(5):
            try:
                return await exchange(attempt)
            except ConnectionClosed as exc:
                if exc.rcvd is None or exc.rcvd.code != 1012:
                    raise
        raise AssertionError("still closed with 1012 after 5 reconnections")


# The channel layer on a master found through Sentinel


@pytest.fixture
def sentinel(two_shards, tmp_path):
    """A Sentinel watching the first shard as master `chatlayer`; yields its port."""
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\nsentinel monitor chatlayer 127.0.0.1 {two_shards[0].port} 1\n"
    )
    process = subprocess.Popen(
        ["/usr/bin/redis-server", str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
        for _ in range(100):
            with contextlib.suppress(redis.RedisError):
                if client.sentinel_get_master_addr_by_name("chatlayer"):
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError("Sentinel did not start")
        yield port
    finally:
        process.kill()
        process.wait()


async def test_layer_on_a_sentinel_managed_master(redis_url, two_shards, sentinel, alice, bob, general_with_bob):
    master = two_shards[0]
    env = {
        **LIVE_ENV,
        "REDIS_URL": redis_url,
        "REDIS_SENTINELS": f"127.0.0.1:{sentinel}",
        "REDIS_SENTINEL_MASTERS": "chatlayer",
    }
    with run_daphne(env) as server_a, run_daphne(env) as server_b:
        a = await ws_connect(server_a, alice)
        b = await ws_connect(server_b, bob)
        channel = f"{django_settings.REDIS_PREFIX}.__group__room.{general_with_bob.pk}"
        assert redis.Redis(port=master.port).pubsub_numsub(channel) == [(channel.encode(), 2)]
        await a.send(type="message.send", room="general", body="through sentinel", client_id="s", ref="s")
        sent = await a.expect("message.new", ref="s")
        assert (await b.expect("message.new"))["message"] == sent["message"]
        await a.close(), await b.close()
