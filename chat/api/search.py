"""REST search: `GET /api/search/` (PROTOCOL.md, "Search"). Parse -> `chat.search` -> serialize."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import search
from chat.models import MAX_ID
from chat.serializers import MessageSerializer, message_data

from .views import HISTORY_MAX, validated


class SearchQuerySerializer(serializers.Serializer):
    q = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, help_text='Words, "phrases", -excluded.'
    )
    room = serializers.CharField(required=False, max_length=50, help_text="A room slug.")
    author = serializers.CharField(required=False, max_length=150, help_text="A username.")
    before = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False, help_text="Message id, exclusive.")
    limit = serializers.IntegerField(min_value=1, max_value=HISTORY_MAX, default=20)


SearchPage = inline_serializer(
    "SearchPage",
    {
        "results": inline_serializer(
            "SearchResult", {"message": MessageSerializer(), "highlight": serializers.CharField()}, many=True
        ),
        "has_more": serializers.BooleanField(),
    },
)


class SearchView(APIView):
    @extend_schema(parameters=[SearchQuerySerializer], responses=SearchPage)
    def get(self, request):
        """Messages matching `q` in the rooms the caller may read, newest first; `before` pages back."""
        query = validated(SearchQuerySerializer, request.query_params)
        found, has_more = search.search_messages(request.user, query.pop("q", ""), **query)
        return Response(
            {"results": [{"message": message_data(m), "highlight": h} for m, h in found], "has_more": has_more}
        )
