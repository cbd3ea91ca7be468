"""Data migrations, run forwards and backwards on the test database."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

OLD = '<p><a href="https://example.com" target="_blank" rel="nofollow noopener noreferrer">x</a> target="_blank"</p>'
NEW = '<p><a href="https://example.com" rel="nofollow noopener noreferrer" target="_blank">x</a> target="_blank"</p>'


def migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([("chat", target)])
    return executor.loader.project_state([("chat", target)]).apps


@pytest.mark.django_db(transaction=True)
def test_stored_links_take_the_contracts_attribute_order_and_back():
    apps = migrate("0005_conversations")
    Room, Message = apps.get_model("chat", "Room"), apps.get_model("chat", "Message")
    room = Room.objects.create(slug="old", name="Old")
    message = Message.objects.create(room=room, body="[x](https://example.com)", html=OLD)
    try:
        migrate("0006_link_attribute_order")
        message.refresh_from_db()
        assert message.html == NEW
        migrate("0005_conversations")
        message.refresh_from_db()
        assert message.html == OLD
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes("chat")[0][1])
