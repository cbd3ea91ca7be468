"""Forms for the server-rendered pages. They parse input only; the services do the work."""

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import UserCreationForm
from django.utils.translation import gettext_lazy as _

from .errors import ChatError
from .models import SLUG_PATTERN, Room


class RegisterForm(UserCreationForm):
    """Django's username and password checks (uniqueness, validators, confirmation); never saved itself."""

    email = forms.EmailField(label=_("Email (optional)"), required=False)

    class Meta(UserCreationForm.Meta):
        fields = ("username", "email")


class PasswordChangeForm(forms.Form):
    """The new password twice; the service checks the old one and runs the password validators."""

    old_password = forms.CharField(
        label=_("Current password"), strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )
    new_password1 = forms.CharField(
        label=_("New password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    new_password2 = forms.CharField(
        label=_("New password again"), strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )

    def clean(self):
        data = super().clean()
        if data.get("new_password1") != data.get("new_password2"):
            self.add_error("new_password2", _("The two new passwords differ: type the same one twice."))
        return data


class RoomCreateForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100)
    slug = forms.RegexField(
        SLUG_PATTERN,
        label=_("Slug"),
        required=False,
        help_text=_("Optional: derived from the name."),
        error_messages={"invalid": _("Use 1-50 lowercase letters, digits or hyphens.")},
    )
    kind = forms.ChoiceField(
        label=_("Kind"),
        choices=[(Room.Kind.PUBLIC, _("Public")), (Room.Kind.PRIVATE, _("Private"))],
        initial=Room.Kind.PUBLIC,
    )
    topic = forms.CharField(label=_("Topic"), max_length=300, required=False)


class DirectForm(forms.Form):
    username = forms.CharField(label=_("Username"), max_length=150)


def add_service_error(form: forms.Form, exc: ChatError) -> None:
    """Show a service error on the field it names (`"slug: ... taken"`), else on the whole form."""
    name, sep, text = exc.detail.partition(": ")
    name = {"new_password": "new_password1", "to": "username"}.get(name, name)
    if sep and name in form.fields:
        form.add_error(name, text)
    else:
        form.add_error(None, exc.detail)
