"""Accounts over REST: sign-up, JWT sign-in, refresh and logout, password change, the current user."""

from django.contrib.auth import update_session_auth_hash
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.views import TokenBlacklistView, TokenObtainPairView, TokenRefreshView

from chat import auth, services, throttles, tokens
from chat.serializers import PasswordChangeSerializer, RegisterSerializer, TokenPairSerializer, UserSerializer

from .views import validated


class RegisterView(APIView):
    authentication_classes = []  # a stale token sent along must not turn a sign-up into a 401
    permission_classes = [AllowAny]
    throttle_classes = throttles.REGISTER

    @extend_schema(request=RegisterSerializer, responses={201: UserSerializer})
    def post(self, request):
        user = services.user_register(**validated(RegisterSerializer, request.data))
        return Response(UserSerializer(user).data, status=status.HTTP_201_CREATED)


class LoginView(TokenObtainPairView):
    """`{"username","password"}` -> `{"access","refresh"}`, throttled per client address and per username."""

    throttle_classes = throttles.LOGIN
    serializer_class = tokens.SignInSerializer


class RefreshView(TokenRefreshView):
    """`{"refresh"}` -> `{"access","refresh"}`: rotated, within JWT_SESSION_MAX_DAYS of the sign-in."""

    serializer_class = tokens.RefreshSerializer


class LogoutView(TokenBlacklistView):
    """Blacklist a refresh token. Holding the token is the credential, so an expired access token is no obstacle."""

    @extend_schema(responses={205: OpenApiResponse(description="The refresh token is blacklisted.")})
    def post(self, request, *args, **kwargs):
        super().post(request, *args, **kwargs)
        return Response(status=status.HTTP_205_RESET_CONTENT)


class PasswordChangeView(APIView):
    throttle_classes = throttles.LOGIN  # the old password must not be guessable here either

    @extend_schema(request=PasswordChangeSerializer, responses={200: TokenPairSerializer})
    def post(self, request):
        """Change the caller's password; every earlier token, session and socket of the user ends,
        except the session this request came with. Returns a fresh token pair."""
        by_session = isinstance(request.successful_authenticator, SessionAuthentication)
        keep = auth.session_mark(request.session.session_key) if by_session else None
        user = services.password_change(
            user=request.user, keep_session=keep, **validated(PasswordChangeSerializer, request.data)
        )
        if by_session:
            update_session_auth_hash(request, user)
        refresh = tokens.token_pair(user)
        return Response({"access": str(refresh.access_token), "refresh": str(refresh)})


class MeView(APIView):
    @extend_schema(responses=UserSerializer)
    def get(self, request):
        return Response(UserSerializer(request.user).data)
