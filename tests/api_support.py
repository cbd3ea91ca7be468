"""Helpers shared by the REST API tests (tests/test_api_*.py)."""
from chat import services
from chat.models import Membership, Message, Room


def db_state() -> tuple:
    """Everything a refused request must leave as it was."""
    return (
        list(Room.objects.order_by("pk").values_list("slug", "name", "kind", "topic", "locked", "archived")),
        list(Membership.objects.order_by("pk").values_list("room_id", "user_id", "role", "last_read_id", "banned")),
        list(Message.objects.order_by("pk").values_list("room_id", "author_id", "body", "kind", "edited_at", "deleted")),
    )


def public_room(owner, slug="general"):
    return services.room_create(user=owner, name=slug.title(), slug=slug)


def private_room(owner, slug="secret", members=()):
    room = services.room_create(user=owner, name=slug.title(), slug=slug, kind="private")
    for user in members:
        services.member_invite(actor=owner, slug=slug, username=user.username)
    return room


def joined(room, *users):
    for user in users:
        services.room_join(user=user, slug=room.slug)
    return room
