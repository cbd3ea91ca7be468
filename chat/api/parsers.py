"""Request parsers for the REST API: DRF's, holding request bodies to the input rules of
WebSocket frames (`chat.protocol`): bounded JSON, and the one rule for text."""
from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser, get_encoding

from chat import protocol
from chat.errors import Invalid


def checked(data):
    """`data`, refused with `invalid` (before any view sees it) if any string in it breaks the text rule."""
    if (bad := protocol.unstorable_field(dict(data.lists()) if hasattr(data, "lists") else data)) is not None:
        raise Invalid(f"{bad}: {protocol.UNSTORABLE}.")
    return data


class ChatJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return checked(protocol.decode_json(stream.read().decode(get_encoding(parser_context or {}))))
        except UnicodeDecodeError:
            raise ParseError("JSON parse error - the body is not text in its charset (send UTF-8).") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}.") from None


class ChatFormParser(FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        return checked(super().parse(stream, media_type, parser_context))


class ChatMultiPartParser(MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        checked(parsed.data)
        return parsed
