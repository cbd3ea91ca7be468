"""REST threads: a message's thread, its root and the replies in pages (PROTOCOL.md, Version 2).

Kept apart from `views` (already long): the same thin shape, parse -> one selector -> serialize.
"""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import selectors
from chat.models import MAX_ID
from chat.serializers import ThreadPageSerializer, message_data

from .views import HISTORY_MAX, validated


class ThreadQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(min_value=0, max_value=MAX_ID, required=False, help_text="Reply id, exclusive.")
    limit = serializers.IntegerField(min_value=1, max_value=HISTORY_MAX, default=50)


class MessageThreadView(APIView):
    @extend_schema(parameters=[ThreadQuerySerializer], responses=ThreadPageSerializer)
    def get(self, request, message_id):
        """The thread `message_id` belongs to: its `root` (the message itself when it is not a
        reply) and one page of replies, ascending by id, after `after`. Readers of the room only."""
        query = validated(ThreadQuerySerializer, request.query_params)
        root, replies, has_more = selectors.message_thread(request.user, message_id, **query)
        return Response(
            {"root": message_data(root), "results": [message_data(m) for m in replies], "has_more": has_more}
        )
