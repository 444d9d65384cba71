"""Composition root of auth_svc: settings, channel to data_access, servicer, health probe."""

from __future__ import annotations

import asyncio

import grpc

from auth_svc import tokens
from auth_svc.activity import SecurityLog
from auth_svc.authenticator import Authenticator, LoginGuards, SessionPolicy
from auth_svc.captcha import build_captcha
from auth_svc.clients import AccountStoreClient
from auth_svc.email_changes import EmailChanges
from auth_svc.keys import SigningKeyError, open_keyring
from auth_svc.login_defence import DefencePolicy, LoginDefence
from auth_svc.mail import build_mail
from auth_svc.mfa import ChallengeBox, MfaSettings, SecondFactor, SecretBox
from auth_svc.password_changes import PasswordChanges
from auth_svc.passwords import PasswordHasher
from auth_svc.rate_limit_servicer import RateLimitServicer
from auth_svc.rate_limit_servicer import add_to_server as add_rate_limiter
from auth_svc.rate_limiter import RateLimiter
from auth_svc.security_client import SecurityStoreClient
from auth_svc.servicer import AuthServicer
from auth_svc.sessions import Sessions
from auth_svc.settings import SERVICE_NAME, AuthSettings
from auth_svc.tokens import AccessTokenSigner
from auth_svc.verification import EmailVerification
from auth_svc.web_clients import WebClients, parse_networks, parse_origins
from meshgram.auth.v1 import auth_pb2_grpc
from meshkit.access_tokens import AccessTokenVerifier
from meshkit.clients import open_channel
from meshkit.peers import data_access_caller
from meshkit.public_api import AUTH_SERVICE, PUBLIC_SERVICES
from meshkit.server import ServiceDefinition, serve
from meshkit.settings import load_settings


def build_definition(settings: AuthSettings) -> ServiceDefinition:
    """Wire auth_svc for settings; call inside a running event loop (it opens a grpc.aio
    channel). It is ready as soon as it serves: its signing key is loaded here, so the JWKS
    and token signing never wait on data_access; shutdown closes the channel."""
    channel = open_channel(settings.data_access_addr, settings.mesh_tls())
    caller = data_access_caller(settings)
    store = AccountStoreClient(channel, caller)
    keyring = open_keyring(settings)
    signer = AccessTokenSigner(keyring, ttl_seconds=settings.access_token_ttl_seconds)
    # PasswordHasher computes its dummy hash here, once, before the server takes calls.
    hasher = PasswordHasher(settings.pepper(), settings.bcrypt_rounds)
    mail = build_mail(settings, channel, caller)
    security = SecurityStoreClient(channel, caller)
    activity = SecurityLog(security)
    verification = EmailVerification(
        store,
        mail.mailer,
        activity,
        ttl_seconds=settings.verify_email_token_ttl_seconds,
        cooldown_seconds=settings.mail_cooldown_seconds,
    )
    captcha = build_captcha(
        settings.captcha_verify_url,
        settings.captcha_secret.get_secret_value() if settings.captcha_secret else "",
        settings.captcha_site_key,
        settings.captcha_timeout_seconds,
    )
    secrets_box = SecretBox(settings.pepper())
    guards = LoginGuards(
        defence=LoginDefence(
            security,
            captcha,
            DefencePolicy(
                lock_after=settings.lockout_after_failures,
                lock_base_seconds=settings.lockout_base_seconds,
                lock_max_seconds=settings.lockout_max_seconds,
                captcha_after=settings.captcha_after_failures,
                client_captcha_after=settings.captcha_after_client_failures,
                client_lock_after=settings.client_lockout_after_failures,
                reset_after_seconds=settings.lockout_reset_seconds,
            ),
            digest_key=settings.pepper().encode(),
        ),
        second_factor=SecondFactor(secrets_box),
        challenges=ChallengeBox(settings.pepper(), settings.mfa_challenge_ttl_seconds),
        store=security,
        log=activity,
        mailer=mail.mailer,
        challenge_max_attempts=settings.mfa_challenge_max_attempts,
    )
    authenticator = Authenticator(
        store,
        hasher,
        signer,
        sessions=SessionPolicy(
            idle_seconds=settings.refresh_token_ttl_seconds,
            max_seconds=settings.session_max_seconds,
            short_seconds=settings.short_session_seconds,
            reuse_window_seconds=settings.refresh_reuse_window_seconds,
            successor_key=tokens.successor_key(settings.pepper()),
        ),
        verification=verification,
        guards=guards,
        unverified_email_may=settings.unverified_email_may,
        password_min_score=settings.password_min_score,
    )
    password_changes = PasswordChanges(
        store,
        hasher,
        mail.mailer,
        activity,
        reset_ttl_seconds=settings.reset_token_ttl_seconds,
        cooldown_seconds=settings.mail_cooldown_seconds,
        min_score=settings.password_min_score,
    )
    mfa_settings = MfaSettings(
        security,
        store,
        secrets_box,
        mail.mailer,
        activity,
        guards.defence,
        issuer=settings.mfa_issuer,
        enrollment_ttl_seconds=settings.mfa_enrollment_ttl_seconds,
        reauthentication_window_seconds=settings.reauthentication_window_seconds,
    )

    async def own_jwks() -> list[dict[str, str]]:
        """auth_svc verifies the access tokens of its own calls with its own keys."""
        return signer.jwks()

    email_changes = EmailChanges(
        store,
        mail.mailer,
        ttl_seconds=settings.verify_email_token_ttl_seconds,
        cooldown_seconds=settings.mail_cooldown_seconds,
        reauthentication_window_seconds=settings.reauthentication_window_seconds,
    )
    servicer = AuthServicer(
        authenticator,
        verification,
        email_changes,
        password_changes,
        Sessions(store, activity),
        mfa_settings,
        activity,
        AccessTokenVerifier(own_jwks, refresh_seconds=settings.jwt_keys_reload_seconds),
        WebClients(
            allowed_origins=parse_origins(settings.browser_origins),
            trusted_proxies=parse_networks(settings.trusted_proxies),
        ),
    )

    # Queued mail goes out from now on, also mail queued before this process started.
    mail.start()

    def register(server: grpc.aio.Server) -> None:
        """Add AuthService to the server."""
        auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server)
        # The edge's shared rate limits (docs/rate-limits.md); never routed at the edge.
        add_rate_limiter(RateLimitServicer(RateLimiter(security)), server)
        # A key added to the folder (a rotation) is picked up without a restart.
        keyring.start_reloading(settings.jwt_keys_reload_seconds)

    async def close_channel() -> None:
        """Stop sending mail, then close the data_access channel once in-flight calls have
        drained."""
        await mail.stop()
        await activity.drain()
        await captcha.aclose()
        await channel.close()

    return ServiceDefinition(
        name=SERVICE_NAME,
        register=register,
        service_names=[AUTH_SERVICE],
        reflection_names=list(PUBLIC_SERVICES),
        check_ready=_ready,
        on_shutdown=[keyring.stop_reloading, close_channel],
    )


async def _ready() -> bool:
    """auth_svc's readiness: everything it needs for every call is loaded before it serves."""
    return True


async def _run(settings: AuthSettings) -> None:
    """Build and serve auth_svc until a stop signal."""
    await serve(build_definition(settings), settings)


def main() -> None:
    """Run auth_svc with settings from the environment until SIGTERM or SIGINT; exit with a
    readable message when the settings or the signing key are unusable."""
    settings = load_settings(AuthSettings, SERVICE_NAME)
    try:
        asyncio.run(_run(settings))
    except SigningKeyError as exc:
        raise SystemExit(f"auth_svc: {exc}") from None
