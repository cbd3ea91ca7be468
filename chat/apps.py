from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.contrib.auth import get_user_model

        from . import checks  # noqa: F401  (registers the deploy checks)
        from .usernames import validate_username_script

        # On the model field, so that every form and `full_clean` refuses look-alike names:
        # the admin's user forms and `createsuperuser` included. (The field's migration
        # state is unchanged: it serialises its constructor's validators only.)
        get_user_model()._meta.get_field("username").validators.append(validate_username_script)
