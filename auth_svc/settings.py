"""Settings of auth_svc, read from AUTH_* environment variables (plus the shared MESHGRAM_ENV)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from meshkit.access_tokens import JWKS_REFRESH_SECONDS
from meshkit.settings import RANDOM_SECRET, DataAccessClientSettings, RequiredSecret

SERVICE_NAME = "auth_svc"


class AuthSettings(DataAccessClientSettings):
    """auth_svc's port, data_access address and credential, secrets, hashing cost, lifetimes."""

    model_config = SettingsConfigDict(env_prefix="AUTH_")
    service_name = SERVICE_NAME

    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    password_pepper: SecretStr | None = Field(
        None,
        description=(
            "Server-side secret mixed into every password hash (HMAC-SHA256 before bcrypt). "
            "Required; `make run` keeps one in var/secrets/. Changing it invalidates every "
            "stored password."
        ),
    )
    bcrypt_rounds: int = Field(
        12,
        ge=4,
        le=31,
        description=(
            "bcrypt cost factor (log2 of the iterations) for new hashes; a password hashed at "
            "another cost is re-hashed at its next successful login."
        ),
    )
    access_token_ttl_seconds: int = Field(
        900, gt=0, le=86_400, description="Lifetime of an access token (JWT) in seconds."
    )
    refresh_token_ttl_seconds: int = Field(
        30 * 86_400,
        gt=0,
        le=2**31 - 1,
        description=(
            "Lifetime of a refresh token in seconds; each refresh issues a fresh one, so a "
            "session not refreshed for this long ends (idle lifetime)."
        ),
    )
    session_max_seconds: int = Field(
        90 * 86_400,
        gt=0,
        le=2**31 - 1,
        description=(
            "Absolute lifetime of a session in seconds: after this long since the login, "
            "refreshing fails and the user logs in again."
        ),
    )
    refresh_reuse_window_seconds: float = Field(
        5.0,
        ge=0,
        le=60,
        description=(
            "A refresh repeated within this many seconds of the first (tabs refreshing at "
            "once) gets the same refresh token instead of revoking the session; 0 turns it off."
        ),
    )
    short_session_seconds: int = Field(
        12 * 3600,
        gt=0,
        le=2**31 - 1,
        description=(
            "Absolute lifetime of a session started without remember_me (a browser also drops "
            "its cookie when it closes); with remember_me, AUTH_SESSION_MAX_SECONDS applies."
        ),
    )
    verify_email_token_ttl_seconds: int = Field(
        24 * 3600, gt=0, le=7 * 86_400, description="Lifetime of an email verification link."
    )
    reset_token_ttl_seconds: int = Field(
        30 * 60, gt=0, le=30 * 60, description="Lifetime of a password-reset link (at most 30 min)."
    )
    mail_cooldown_seconds: int = Field(
        60,
        ge=0,
        le=86_400,
        description=(
            "Least time between two verification (or two reset) mails to one account; asking "
            "sooner answers the same but sends nothing."
        ),
    )
    password_min_score: int = Field(
        3,
        ge=0,
        le=4,
        description=(
            "Least zxcvbn strength score (0-4) of a new password, judged with the account's "
            "email and username as known words; 0 turns the estimate off."
        ),
    )
    browser_origins: str = Field(
        "",
        description=(
            "Comma-separated origins (scheme://host[:port]) whose pages may refresh or log out "
            "with the refresh-token cookie; `make run` passes the edge's CORS origins."
        ),
    )
    trusted_proxies: str = Field(
        "127.0.0.1/32,::1/128",
        description=(
            "Comma-separated networks (CIDR) of the edge: only calls from there may state the "
            "client's address (x-meshgram-client-ip) that sessions record."
        ),
    )
    jwt_keys_dir: Path = Field(
        Path("var/keys/jwt"),
        description=(
            "Folder of the Ed25519 keys that sign access tokens (one PEM file each, named "
            "<activation unix seconds>-<kid>.pem, mode 0600), relative to the working directory; "
            "re-read while running. The first key is generated in development; in production "
            "create it with `make rotate-keys`."
        ),
    )
    jwt_private_key_file: Path = Field(
        Path("var/keys/jwt-ed25519.pem"),
        description=(
            "The former single signing key (PEM, PKCS#8 Ed25519): when AUTH_JWT_KEYS_DIR holds "
            "no key and this file exists, it is copied there as the first key; ignored otherwise."
        ),
    )
    jwt_key_publish_delay_seconds: int = Field(
        # Verifiers re-read the JWKS every JWKS_REFRESH_SECONDS: a key published this long ahead
        # is known to all of them before its first token, with room for a failed fetch or two.
        int(5 * JWKS_REFRESH_SECONDS),
        gt=0,
        le=7 * 86_400,
        description=(
            "How long `make rotate-keys` publishes a new key before it signs: longer than the "
            "verifiers' JWKS refresh interval (60 s), so they know the key before its first token."
        ),
    )
    jwt_key_retention_leeway_seconds: int = Field(
        60,
        ge=0,
        le=86_400,
        description=(
            "How long past the access-token lifetime a replaced key stays published (clock "
            "skew between hosts); after that `make rotate-keys` deletes its file."
        ),
    )
    jwt_keys_reload_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        description=(
            "How often auth_svc re-reads AUTH_JWT_KEYS_DIR (cheap when unchanged); must be "
            "shorter than AUTH_JWT_KEY_PUBLISH_DELAY_SECONDS."
        ),
    )

    @model_validator(mode="after")
    def _keys_are_published_before_they_sign(self) -> Self:
        # Every replica must have re-read the folder, and so publish a new key, before any
        # replica signs with it.
        if self.jwt_keys_reload_seconds >= self.jwt_key_publish_delay_seconds:
            raise ValueError(
                "AUTH_JWT_KEYS_RELOAD_SECONDS must be shorter than "
                "AUTH_JWT_KEY_PUBLISH_DELAY_SECONDS"
            )
        return self

    # Redeclared for auth_svc's own default and wording: its one peer is data_access.
    call_timeout_seconds: float = Field(
        5.0, gt=0, description="Deadline in seconds of every call to data_access."
    )

    # Outgoing mail (auth_svc/mail): where its links lead, the SMTP server, the sender loop.
    public_url: str = Field(
        "http://localhost:8080",
        pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$",
        description=(
            "Base URL of the web pages that mails link to, e.g. "
            "<public_url>/account/verify-email#token=..."
        ),
    )
    mail_from: str = Field(
        "meshgram <no-reply@localhost>", description="From address of every mail auth_svc sends."
    )
    smtp_host: str = Field(
        "127.0.0.1",
        description="SMTP server that auth_svc hands its mail to (`make run`: its mailbox).",
    )
    smtp_port: int = Field(8025, ge=1, le=65535, description="Port of the SMTP server.")
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        "none",
        description=(
            "none (plain SMTP, for a server on this machine), starttls (upgrade required) or "
            "tls (TLS from the first byte, usually port 465); certificates are verified."
        ),
    )
    smtp_username: str = Field("", description="SMTP login; empty: no authentication.")
    smtp_password: SecretStr | None = Field(None, description="Password of the SMTP login.")
    smtp_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=120,
        description="Deadline of each SMTP step (connecting, every command, the message).",
    )
    mail_sending: bool = Field(
        True,
        description=(
            "Whether this process delivers queued mail (one replica at a time does, under a "
            "lease); false leaves it to the others, e.g. replicas without a route to SMTP."
        ),
    )
    mail_poll_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description=(
            "How often the sender asks data_access for due mail; mail this process queues "
            "goes out at once."
        ),
    )
    mail_max_attempts: int = Field(
        12,
        ge=1,
        le=100,
        description=(
            "Delivery attempts before a mail is given up; the waits between them double from "
            "5 s up to 1 h."
        ),
    )

    # Account defences: re-authentication, MFA, lockout and CAPTCHA (auth_svc/login_defence.py).
    reauthentication_window_seconds: int = Field(
        600,
        gt=0,
        le=86_400,
        description=(
            "How recent a login (or Reauthenticate) must be to change the email, MFA or the "
            "recovery codes; older ones get FAILED_PRECONDITION (REAUTHENTICATION_REQUIRED)."
        ),
    )
    mfa_issuer: str = Field(
        "meshgram",
        min_length=1,
        max_length=64,
        description="Name authenticator apps show for meshgram's TOTP entries.",
    )
    mfa_challenge_ttl_seconds: int = Field(
        300,
        gt=0,
        le=3600,
        description="How long the second step of a login (VerifyMfa) may wait after the password.",
    )
    mfa_challenge_max_attempts: int = Field(
        5, ge=1, le=20, description="Wrong codes after which a login's challenge is used up."
    )
    mfa_enrollment_ttl_seconds: int = Field(
        900,
        gt=0,
        le=86_400,
        description="How long a started MFA enrolment may be confirmed with a first code.",
    )
    lockout_after_failures: int = Field(
        5,
        ge=1,
        le=1000,
        description=(
            "Failed logins for one address from one client network (IPv4 address, IPv6 /64) "
            "after which that client waits; other clients are not affected."
        ),
    )
    lockout_base_seconds: int = Field(
        30,
        ge=1,
        le=86_400,
        description="The first wait of a locked client; it doubles with every further failure.",
    )
    lockout_max_seconds: int = Field(
        900, ge=1, le=86_400, description="The longest wait of a locked client."
    )
    lockout_reset_seconds: int = Field(
        3600,
        ge=60,
        # data_access sweeps counters idle for a day: a longer memory would not hold.
        le=86_400,
        description="Failures are forgotten after this long without a new one (at most a day).",
    )
    captcha_after_failures: int = Field(
        3,
        ge=1,
        le=1000,
        description=(
            "Failed logins for one address, from anywhere, after which logging in to it needs "
            "a CAPTCHA (when AUTH_CAPTCHA_VERIFY_URL is set)."
        ),
    )
    captcha_after_client_failures: int = Field(
        10,
        ge=1,
        le=10_000,
        description=(
            "Failed logins from one client network, for any addresses, after which its logins "
            "need a CAPTCHA (when AUTH_CAPTCHA_VERIFY_URL is set)."
        ),
    )
    client_lockout_after_failures: int = Field(
        100,
        ge=1,
        le=100_000,
        description=(
            "Failed logins from one client network after which it waits like a locked client "
            "(RESOURCE_EXHAUSTED, TOO_MANY_ATTEMPTS)."
        ),
    )
    captcha_verify_url: str = Field(
        "",
        description=(
            "siteverify endpoint of the CAPTCHA provider, e.g. "
            "https://challenges.cloudflare.com/turnstile/v0/siteverify (Turnstile) or "
            "https://api.hcaptcha.com/siteverify (hCaptcha); empty turns CAPTCHAs off, as in "
            "development."
        ),
    )
    captcha_secret: SecretStr | None = Field(
        None, description="The provider's secret key; required with AUTH_CAPTCHA_VERIFY_URL."
    )
    captcha_site_key: str = Field(
        "",
        description=(
            "The provider's public site key, returned to clients with CAPTCHA_REQUIRED so "
            "they can show the widget."
        ),
    )
    captcha_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=30,
        description=(
            "Deadline of a CAPTCHA check; a provider that does not answer in time fails the "
            "login with UNAVAILABLE (CAPTCHA_UNAVAILABLE), never lets it through."
        ),
    )

    @model_validator(mode="after")
    def _captcha_has_its_secret(self) -> Self:
        # A configured provider without its secret would refuse every token: say so at start.
        if self.captcha_verify_url and not (
            self.captcha_secret and self.captcha_secret.get_secret_value()
        ):
            raise ValueError("AUTH_CAPTCHA_SECRET is required with AUTH_CAPTCHA_VERIFY_URL")
        return self

    def required_secrets(self) -> list[RequiredSecret]:
        """The password pepper, besides the caller credential."""
        return [*super().required_secrets(), self._pepper_secret()]

    def pepper(self) -> str:
        """Return the password pepper (validated when the settings were read)."""
        return self._pepper_secret().get()

    def _pepper_secret(self) -> RequiredSecret:
        """The password pepper as a required secret."""
        return RequiredSecret(
            variable="AUTH_PASSWORD_PEPPER",
            value=self.password_pepper,
            provided_by="`make run` generates one once (var/secrets/) and passes it to auth_svc",
            expected=f"{RANDOM_SECRET}, and never change it: stored passwords would stop matching",
        )
