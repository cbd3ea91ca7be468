"""`manage.py seed_demo`: demo users, rooms and messages for trying the chat locally.

Idempotent: users, rooms and memberships are created once, and messages carry fixed
`client_id`s, so the services return the originals on a second run instead of duplicating.
Rooms, memberships and messages go through `chat.services`, like every other writer.
"""

from django.contrib.auth import get_user_model, password_validation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from chat import services
from chat.errors import ChatError
from chat.management.base import ChatCommand
from chat.models import Membership, Room

User = get_user_model()

PASSWORD = "chat-demo-pass"
USERS = ["alice", "bob", "carol"]
ADMIN = "admin"
# slug -> (name, kind, topic, owner, other members)
ROOMS = {
    "general": ("General", Room.Kind.PUBLIC, "Say hello", "alice", ["bob", "carol"]),
    "random": ("Random", Room.Kind.PUBLIC, "Anything goes", "bob", ["alice"]),
    "team": ("Team", Room.Kind.PRIVATE, "alice and bob only", "alice", ["bob"]),
}
MESSAGES = [
    ("general", "alice", "Welcome to the demo chat!"),
    ("general", "bob", "Hi Alice. Messages arrive live in every open tab."),
    ("general", "carol", "And history stays when you reload."),
    ("random", "bob", "Try typing in two browsers side by side."),
    ("team", "alice", "This room is private: only invited members see it."),
    ("team", "bob", "Got it."),
]


class Command(ChatCommand):
    help = gettext_lazy(
        "Create demo users (alice, bob, carol, admin), rooms (general, random, team) and a few messages."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000/", help="where the server will listen, to print")

    def handle(self, *args, **options):
        users = {name: self._user(name) for name in USERS}
        users[ADMIN] = self._user(ADMIN, is_staff=True, is_superuser=True)
        for slug, (name, kind, topic, owner, members) in ROOMS.items():
            self._try(slug, self._room, slug, name, kind, topic, users[owner], [users[m] for m in members])
        for index, (slug, author, body) in enumerate(MESSAGES):
            self._try(
                slug, services.message_send, user=users[author], slug=slug, body=body, client_id=f"seed-demo-{index}"
            )
        self.stdout.write(self.style.SUCCESS(_("Demo data is ready.")))
        self.stdout.write(
            _("Users: %(users)s and %(admin)s (staff); password for all: %(password)s")
            % {"users": ", ".join(USERS), "admin": ADMIN, "password": PASSWORD}
        )
        self.stdout.write(
            _("Start the server (`make run`, or `daphne chatproject.asgi:application`) and open %(url)s")
            % {"url": options["url"]}
        )

    def _try(self, slug, call, /, *args, **kwargs) -> None:
        """A room someone archived, locked or left since the last run is reported and skipped."""
        try:
            call(*args, **kwargs)
        except ChatError as exc:
            self.stderr.write(
                self.style.WARNING(_("Skipped in '%(slug)s': %(problem)s") % {"slug": slug, "problem": exc.detail})
            )

    def _user(self, username: str, **flags) -> User:
        user, created = User.objects.get_or_create(username=username, defaults=flags)
        if created or not user.check_password(PASSWORD):
            password_validation.validate_password(PASSWORD, user)
            user.set_password(PASSWORD)
            user.save()
        return user

    def _room(self, slug, name, kind, topic, owner, members) -> None:
        if not Room.objects.filter(slug=slug).exists():
            services.room_create(user=owner, name=name, slug=slug, kind=kind, topic=topic)
        for member in members:
            if kind == Room.Kind.PUBLIC:
                services.room_join(user=member, slug=slug)  # a no-op for members
            elif not Membership.objects.filter(room__slug=slug, user=member).exists():
                services.member_invite(actor=owner, slug=slug, username=member.username)
