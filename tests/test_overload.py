"""Overload and slow consumers, against one real daphne on Redis, with real WebSocket clients.

Each client is a `tests.reconnecting.ReconnectingClient` that resends only after `room.joined`
and checks, as frames arrive, that each connection brings the room's messages in id order;
when its connection drops, it reconnects and resumes with `join since`. Invariant: every client's
de-duplicated, id-ordered view equals the database's sequence for the room, every send is
acknowledged, and every `client_id` is one message.
"""

import asyncio
import contextlib
import time

import pytest
from django.contrib.auth import get_user_model

from chat import services
from chat.models import Message
from chat.serializers import message_data
from tests.live import run_daphne
from tests.reconnecting import ReconnectingClient
from tests.support import db

pytestmark = [pytest.mark.fault, pytest.mark.live, pytest.mark.django_db(transaction=True)]

User = get_user_model()
ROOM = "load"
LOAD_ENV = {"CHAT_RATE_PER_10S": "100000", "CHAT_MAX_CONNECTIONS_PER_USER": "1000"}


def socket_client(server, user, name: str, **options) -> ReconnectingClient:
    """A client in ROOM that resends after `room.joined` and checks the order of what arrives."""
    return ReconnectingClient(
        user,
        [server],
        [ROOM],
        name,
        resend="joined",
        check_order=True,
        connect_options={"open_timeout": 10, "ping_interval": None, "max_size": 2**22},
        **options,
    )


async def wait_for(done, timeout: float, clients, explain) -> None:
    """Poll `done()` until true; fail with `explain()` after `timeout` s, or as soon as a client's task dies."""
    deadline = time.monotonic() + timeout
    while not done():
        for client in clients:
            client.check()
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s: {explain()}")
        await asyncio.sleep(0.05)


@db
def members(count: int) -> list:
    people = [User.objects.create_user(f"load{i}", password="x") for i in range(count)]
    services.room_create(user=people[0], name="Load", slug=ROOM)
    for person in people[1:]:
        services.room_join(user=person, slug=ROOM)
    return people


@db
def room_ids() -> list[int]:
    return list(Message.objects.filter(room__slug=ROOM).order_by("id").values_list("id", flat=True))


@db
def room_history() -> list[dict]:
    rows = Message.objects.filter(room__slug=ROOM).select_related("room", "author").order_by("id")
    return [message_data(m) for m in rows]


@db
def stored_ids(client_ids) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for client_id, pk in Message.objects.filter(client_id__in=list(client_ids)).values_list("client_id", "id"):
        found.setdefault(client_id, []).append(pk)
    return found


async def assert_views_and_acks(clients: list[ReconnectingClient], senders: list[ReconnectingClient], sent: list[str]):
    history = await room_history()
    errors = {client.name: client.errors for client in clients if client.errors}
    assert not errors, f"error frames: {errors}"
    for client in clients:
        view = client.ordered(ROOM)
        assert view == history, (
            f"{client.name} differs from the database: misses "
            f"{client.missing(ROOM, [m['id'] for m in history])[:20]}, "
            f"closes {client.close_codes}"
        )
    acks = {cid: pk for sender in senders for cid, pk in sender.acked.items()}
    assert sorted(acks) == sorted(sent), f"unacknowledged: {sorted(set(sent) - set(acks))[:20]}"
    assert await stored_ids(sent) == {cid: [pk] for cid, pk in acks.items()}


async def test_overload_every_client_ends_with_the_rooms_history(redis_url):
    """50 clients in one room, 5 senders offering 200 messages/s for 3 s."""
    clients_n, senders_n, rate, seconds = 50, 5, 200, 3.0
    per_sender = int(rate * seconds) // senders_n
    people = await members(clients_n)
    with run_daphne({**LOAD_ENV, "REDIS_URL": redis_url}) as server:
        clients = [socket_client(server, person, f"c{i}") for i, person in enumerate(people)]
        try:
            for batch in range(0, clients_n, 10):
                await asyncio.gather(*(client.start(15) for client in clients[batch : batch + 10]))
            senders = clients[:senders_n]
            sent = [f"{sender.name}-{k}" for sender in senders for k in range(per_sender)]
            before = len(await room_ids())
            start = time.monotonic()

            async def offer(sender: ReconnectingClient):
                for k in range(per_sender):
                    await asyncio.sleep(max(0.0, start + k * senders_n / rate - time.monotonic()))
                    await sender.send(ROOM, f"load {k} from {sender.name}", client_id=f"{sender.name}-{k}")

            await asyncio.gather(*(offer(sender) for sender in senders))
            offered_s = time.monotonic() - start
            await wait_for(
                lambda: not any(s.pending for s in senders),
                20,
                clients,
                lambda: f"unacknowledged: { {s.name: len(s.pending) for s in senders} }",
            )
            ids = await room_ids()
            assert len(ids) == before + len(sent)

            # Whatever has not come within 3 s of the last acknowledgement was lost, not delayed.
            with contextlib.suppress(AssertionError):
                await wait_for(lambda: not any(c.missing(ROOM, ids) for c in clients), 3, clients, lambda: "")
            missed = {c.name: len(c.missing(ROOM, ids)) for c in clients if c.missing(ROOM, ids)}
            silent = {name: n for name, n in missed.items() if not next(c for c in clients if c.name == name).closes}
            for client in clients:
                if client.missing(ROOM, ids) and client.conn is not None:
                    await client.rejoin(ROOM)
            await wait_for(
                lambda: not any(c.missing(ROOM, ids) for c in clients),
                15,
                clients,
                lambda: f"missing after join since: { {c.name: len(c.missing(ROOM, ids)) for c in clients} }",
            )
            await assert_views_and_acks(clients, senders, sent)
            assert offered_s < seconds + 1, f"the senders could not offer the load: {offered_s:.1f} s"
            # join since recovered everything; but a client whose connection never dropped must
            # not have needed it: it had no reason to ask.
            assert not silent, f"lost on open connections (messages per client): {silent}; all misses: {missed}"
        finally:
            await asyncio.gather(*(client.stop() for client in clients))


async def test_slow_consumer_does_not_hold_back_the_others(redis_url):
    """One client stops reading while a sender sends N large messages: the others get every
    one as soon as it is sent; the server drops the slow one once more than CHAT_MAX_SEND_BUFFER
    bytes wait for it, and it resumes with `join since` when it reads again."""
    # The kernel takes about 2 MB for a socket on loopback before the server's own buffer grows
    # (the socket buffers grow with the loopback's 64 KB segments): send twice that.
    n, body_size, fast_n = 200, 24_000, 5
    people = await members(fast_n + 2)
    env = {**LOAD_ENV, "REDIS_URL": redis_url, "CHAT_MAX_SEND_BUFFER": "65536", "CHAT_MAX_BODY": str(body_size + 10)}
    with run_daphne(env) as server:
        sender = socket_client(server, people[0], "sender")
        fast = [socket_client(server, person, f"fast{i}") for i, person in enumerate(people[1:-1])]
        slow = socket_client(server, people[-1], "slow", rcvbuf=4096, max_queue=1)
        clients = [sender, *fast, slow]
        try:
            await asyncio.gather(*(client.start(15) for client in clients))
            slow.reading.clear()
            sent = [f"s{k}" for k in range(n)]
            for k, client_id in enumerate(sent):
                await sender.send(ROOM, f"{k:05d} " + "x" * body_size, client_id=client_id)
            await wait_for(
                lambda: not sender.pending, 20, clients, lambda: f"{len(sender.pending)} sends unacknowledged"
            )
            new_ids = sorted(sender.acked.values())
            send_end = max(sender.arrived[i] for i in new_ids)
            await wait_for(
                lambda: not any(c.missing(ROOM, new_ids) for c in fast),
                10,
                clients,
                lambda: f"fast clients missing: { {c.name: len(c.missing(ROOM, new_ids)) for c in fast} }",
            )
            lag = max(c.arrived[i] for c in fast for i in new_ids) - send_end
            assert lag < 2.0, f"the fast clients got the last message {lag:.2f} s after it was sent"
            assert slow.missing(ROOM, new_ids), "the slow client read everything: it was not slow"

            slow.reading.set()
            ids = await room_ids()
            await wait_for(
                lambda: not slow.missing(ROOM, ids),
                15,
                clients,
                lambda: (
                    f"slow client misses {len(slow.missing(ROOM, ids))} after {len(slow.closes)} "
                    f"closes ({set(slow.close_codes)})"
                ),
            )
            await assert_views_and_acks(clients, [sender], sent)
            assert slow.close_codes == [None], f"the server did not drop the slow client: closes {slow.closes}"
            assert not any(c.closes for c in [sender, *fast]), {c.name: c.close_codes for c in clients}
        finally:
            await asyncio.gather(*(client.stop() for client in clients))
