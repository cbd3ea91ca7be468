"""How frames reach a socket (chat/realtime/transport.py): the plain ASGI transport, and shared frames."""

from chat.realtime import transport
from chat.realtime.daphne import DaphneServer


async def test_a_send_of_no_known_server_gets_the_plain_transport():
    """The test communicator's `send` (or any wrapped one): frames wait their turn and go through it."""

    async def send(message):
        pass

    assert transport.of(send) is transport.PLAIN and not transport.PLAIN.direct
    assert DaphneServer().transport(send) is None


def test_a_shared_frame_is_framed_once_for_every_recipient():
    class Factory:
        made = 0

        def prepareMessage(self, payload):
            self.made += 1
            return ("framed", payload)

    factory, frame = Factory(), transport.Frame("héllo")
    assert frame.prepared(factory) == ("framed", "héllo".encode()) and frame.prepared(factory) is frame.prepared(
        factory
    )
    assert factory.made == 1


def test_outside_daphne_a_batch_holds_nothing():
    with transport.batch():
        pass
