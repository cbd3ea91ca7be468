"""Forms for the server-rendered pages. They parse input only; the services do the work."""
from django import forms
from django.contrib.auth.forms import UserCreationForm

from .errors import ChatError
from .models import SLUG_PATTERN, Room


class RegisterForm(UserCreationForm):
    """Django's username and password checks (uniqueness, validators, confirmation); never saved itself."""

    email = forms.EmailField(required=False)

    class Meta(UserCreationForm.Meta):
        fields = ("username", "email")


class RoomCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    slug = forms.RegexField(SLUG_PATTERN, required=False, help_text="Optional: derived from the name.",
                            error_messages={"invalid": "Use 1-50 lowercase letters, digits or hyphens."})
    kind = forms.ChoiceField(choices=[(Room.Kind.PUBLIC, "Public"), (Room.Kind.PRIVATE, "Private")],
                             initial=Room.Kind.PUBLIC)
    topic = forms.CharField(max_length=300, required=False)


class DirectForm(forms.Form):
    username = forms.CharField(max_length=150)


def add_service_error(form: forms.Form, exc: ChatError) -> None:
    """Show a service error on the field it names (`"slug: ... taken"`), else on the whole form."""
    name, sep, text = exc.detail.partition(": ")
    if sep and name in form.fields:
        form.add_error(name, text)
    else:
        form.add_error(None, exc.detail)
