"""chat/services/accounts.py: registration.

Against the real database: the rows a service writes and the events it publishes on commit.
Setup calls run outside `committed()`, so their on-commit events never fire; only the call
under test publishes into `published`.
"""

import pytest

from chat import services
from chat.errors import Forbidden

# user_register


def test_user_register(settings, django_user_model):
    user = services.user_register(username="zed", password="s3cret-pass-1", email="z@example.com")
    assert user.check_password("s3cret-pass-1") and user.email == "z@example.com"
    settings.CHAT_REGISTRATION_OPEN = False
    with pytest.raises(Forbidden, match="closed"):
        services.user_register(username="yan", password="s3cret-pass-1")
    assert not django_user_model.objects.filter(username="yan").exists()
