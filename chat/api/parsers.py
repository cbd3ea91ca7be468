"""Request parsers for the REST API: DRF's, holding request bodies to the input rules of
WebSocket frames (`chat.protocol`): bounded JSON, and the one rule for text."""

from django.utils.translation import gettext as _
from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser, get_encoding

from chat import protocol
from chat.errors import Invalid


def checked(data, text: str | None = None) -> None:
    """Refuses `data` (decoded from JSON `text`, if given) with `invalid`, before any view sees
    it, if any string in it breaks the text rule."""
    if hasattr(data, "lists"):  # a form: each field's values, a single one as itself
        data = {key: values[0] if len(values) == 1 else values for key, values in data.lists()}
    if (bad := protocol.unstorable_field(data, text)) is not None:
        raise Invalid(protocol.UNSTORABLE, field=bad)


class ChatJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            text = stream.read().decode(get_encoding(parser_context or {}))
            data = protocol.decode_json(text)
            checked(data, text)
            return data
        except UnicodeDecodeError:
            raise ParseError(_("JSON parse error - the body is not text in its charset (send UTF-8).")) from None
        except ValueError as exc:
            raise ParseError(_("JSON parse error - %(problem)s.") % {"problem": exc}) from None


class ChatFormParser(FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        checked(data)
        return data


class ChatMultiPartParser(MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        checked(parsed.data)
        return parsed
