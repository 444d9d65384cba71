"""The data-access services: protobuf in, repository call, protobuf out; nothing else."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from data_access.account_tokens import AccountTokenStore
from data_access.accounts import AccountStore
from data_access.blob_collections import BlobCollections
from data_access.changes import Change, ChangeFeed, FeedEvent, Heartbeat
from data_access.images import ImageStore
from data_access.lifecycle import LONGEST_GRACE, AccountLifecycle
from data_access.login_attempts import LoginAttemptStore
from data_access.mfa import MfaStore
from data_access.models import SECURITY_EVENT_KINDS
from data_access.moderation import AccountStatus, ModerationStore
from data_access.outbox import MailOutbox
from data_access.profiles import ProfileStore
from data_access.rate_windows import RateWindowStore, WindowHit
from data_access.records import (
    AccountRecord,
    ChallengeUse,
    Device,
    FollowList,
    GivenUp,
    ImageRecord,
    ListedPage,
    LoginAttemptCounter,
    Mail,
    MailOutcome,
    MfaCode,
    MfaRecord,
    NewImage,
    NewSecurityEvent,
    NewSession,
    NewToken,
    ProfileFields,
    ProfileRecord,
    ProfileSummary,
    RecoveryCodeUse,
    Relationship,
    Rendition,
    Retry,
    SearchPosition,
    SecurityEventRecord,
    Sent,
    SessionRecord,
    TakenEmailMail,
    TokenPurpose,
    TotpStep,
)
from data_access.refresh_tokens import RefreshTokenStore
from data_access.security_events import SecurityEventStore
from data_access.sessions import SessionStore
from data_access.social_graph import SocialGraph
from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from meshkit.errors import FieldViolation, invalid
from meshkit.timestamps import optional_timestamp, required_datetime, to_timestamp

Context = grpc.aio.ServicerContext[Any, Any]

_PURPOSES: dict[pb.AccountTokenPurpose.ValueType, TokenPurpose] = {
    pb.ACCOUNT_TOKEN_PURPOSE_VERIFY_EMAIL: TokenPurpose.VERIFY_EMAIL,
    pb.ACCOUNT_TOKEN_PURPOSE_RESET_PASSWORD: TokenPurpose.RESET_PASSWORD,
    pb.ACCOUNT_TOKEN_PURPOSE_CHANGE_EMAIL: TokenPurpose.CHANGE_EMAIL,
}
# Each stored kind is the wire name without its prefix, lower-cased ("login_succeeded"); a kind
# missing from the proto fails here, at import.
_EVENT_KINDS: dict[pb.SecurityEventKind.ValueType, str] = {
    pb.SecurityEventKind.Value(f"SECURITY_EVENT_KIND_{kind.upper()}"): kind
    for kind in SECURITY_EVENT_KINDS
}
_EVENT_KIND_VALUES = {kind: value for value, kind in _EVENT_KINDS.items()}


class AccountStoreServicer(pb_grpc.AccountStoreServiceServicer):
    """AccountStoreService over the account, token and session repositories."""

    def __init__(
        self,
        accounts: AccountStore,
        refresh_tokens: RefreshTokenStore,
        account_tokens: AccountTokenStore,
        sessions: SessionStore,
    ) -> None:
        self._accounts = accounts
        self._refresh_tokens = refresh_tokens
        self._account_tokens = account_tokens
        self._sessions = sessions

    async def CreateAccount(  # noqa: N802 (name fixed by the proto)
        self, request: pb.CreateAccountRequest, context: Context
    ) -> pb.CreateAccountResponse:
        """Create an account, its empty profile, its verification token and its mail."""
        account = await self._accounts.create(
            request.email,
            request.username,
            request.password_hash,
            verification=_new_token(request, "verification"),
            mail=_mail(request),
            if_email_taken=(
                TakenEmailMail(
                    mail=Mail(
                        kind=request.mail_if_email_taken.kind,
                        sealed=request.mail_if_email_taken.sealed,
                    ),
                    cooldown=request.taken_mail_cooldown.ToTimedelta(),
                )
                if request.HasField("mail_if_email_taken")
                else None
            ),
        )
        return pb.CreateAccountResponse(account=_account(account))

    async def GetCredentials(  # noqa: N802 (name fixed by the proto)
        self, request: pb.GetCredentialsRequest, context: Context
    ) -> pb.GetCredentialsResponse:
        """Return an account and its password hash by email or by account id."""
        if request.account_id:
            credentials = await self._accounts.credentials_by_id(request.account_id)
        else:
            credentials = await self._accounts.credentials(request.email)
        return pb.GetCredentialsResponse(
            account=_account(credentials.account), password_hash=credentials.password_hash
        )

    async def CreateRefreshToken(  # noqa: N802 (name fixed by the proto)
        self, request: pb.CreateRefreshTokenRequest, context: Context
    ) -> pb.CreateRefreshTokenResponse:
        """Store a session and the first token of its family."""
        started = await self._refresh_tokens.create(_new_session(request))
        return pb.CreateRefreshTokenResponse(
            family_id=str(started.id), session_start_time=to_timestamp(started.created_at)
        )

    async def RotateRefreshToken(  # noqa: N802 (name fixed by the proto)
        self, request: pb.RotateRefreshTokenRequest, context: Context
    ) -> pb.RotateRefreshTokenResponse:
        """Consume a token and store its successor."""
        rotation = await self._refresh_tokens.rotate(
            request.token_hash,
            request.new_token_hash,
            required_datetime(request, "new_expire_time"),
            reuse_window=_duration(request, "reuse_window"),
            device=_device(request.device) if request.HasField("device") else None,
        )
        return pb.RotateRefreshTokenResponse(
            account=_account(rotation.account),
            family_id=str(rotation.family_id),
            repeated=rotation.repeated,
            new_expire_time=to_timestamp(rotation.expires_at),
            session_start_time=to_timestamp(rotation.session_started_at),
            remembered=rotation.remembered,
            auth_time=to_timestamp(rotation.authenticated_at),
        )

    async def RevokeRefreshToken(  # noqa: N802 (name fixed by the proto)
        self, request: pb.RevokeRefreshTokenRequest, context: Context
    ) -> pb.RevokeRefreshTokenResponse:
        """Revoke the family of a token."""
        await self._refresh_tokens.revoke_family(request.token_hash)
        return pb.RevokeRefreshTokenResponse()

    async def ReplacePasswordHash(  # noqa: N802 (name fixed by the proto)
        self, request: pb.ReplacePasswordHashRequest, context: Context
    ) -> pb.ReplacePasswordHashResponse:
        """Replace a password hash that is still the expected one (a change ends sessions)."""
        ended = await self._accounts.replace_password_hash(
            request.account_id,
            request.old_password_hash,
            request.new_password_hash,
            password_changed=request.password_changed,
            keep_session_id=request.keep_session_id,
            mail=_mail(request),
        )
        return pb.ReplacePasswordHashResponse(replaced=ended is not None, ended_sessions=ended or 0)

    async def IssueAccountToken(  # noqa: N802 (name fixed by the proto)
        self, request: pb.IssueAccountTokenRequest, context: Context
    ) -> pb.IssueAccountTokenResponse:
        """Store a single-use token and its mail for whoever owns an email, if eligible."""
        token, mail = _token_and_mail(request)
        await self._account_tokens.issue(
            request.email,
            _purpose(request.purpose),
            token,
            mail,
            cooldown=_duration(request, "cooldown"),
        )
        return pb.IssueAccountTokenResponse()

    async def LookupAccountToken(  # noqa: N802 (name fixed by the proto)
        self, request: pb.LookupAccountTokenRequest, context: Context
    ) -> pb.LookupAccountTokenResponse:
        """Return the account of a usable token."""
        account = await self._account_tokens.lookup(request.token_hash, _purpose(request.purpose))
        return pb.LookupAccountTokenResponse(account=_account(account))

    async def UseAccountToken(  # noqa: N802 (name fixed by the proto)
        self, request: pb.UseAccountTokenRequest, context: Context
    ) -> pb.UseAccountTokenResponse:
        """Use a token up and apply what it proves."""
        account = await self._account_tokens.use(
            request.token_hash,
            _purpose(request.purpose),
            new_password_hash=request.new_password_hash,
            mail=_mail(request),
        )
        return pb.UseAccountTokenResponse(account=_account(account))

    async def RequestEmailChange(  # noqa: N802 (name fixed by the proto)
        self, request: pb.RequestEmailChangeRequest, context: Context
    ) -> pb.RequestEmailChangeResponse:
        """Store an email change's token with its mail and the notice to the current address."""
        token, mail = _token_and_mail(request)
        await self._account_tokens.request_email_change(
            request.account_id,
            request.new_email,
            token,
            mail,
            _sealed(request.notice) if request.HasField("notice") else None,
            cooldown=_duration(request, "cooldown"),
        )
        return pb.RequestEmailChangeResponse()

    async def ListSessions(  # noqa: N802 (name fixed by the proto)
        self, request: pb.ListSessionsRequest, context: Context
    ) -> pb.ListSessionsResponse:
        """List the live sessions of an account."""
        sessions = await self._sessions.live(request.account_id)
        return pb.ListSessionsResponse(sessions=[_session(session) for session in sessions])

    async def RevokeSessions(  # noqa: N802 (name fixed by the proto)
        self, request: pb.RevokeSessionsRequest, context: Context
    ) -> pb.RevokeSessionsResponse:
        """End one session of an account, or all but one."""
        which = request.WhichOneof("which")
        if which == "session_id":
            ended = await self._sessions.end_one(request.account_id, request.session_id)
        elif which == "all_except_session_id":
            ended = await self._sessions.end_all_except(
                request.account_id, request.all_except_session_id
            )
        else:
            raise invalid([FieldViolation("which", "set session_id or all_except_session_id")])
        return pb.RevokeSessionsResponse(revoked_count=ended)


class AccountSecurityServicer(pb_grpc.AccountSecurityServiceServicer):
    """AccountSecurityService over the login-attempt, MFA, session and security-log
    repositories."""

    def __init__(
        self,
        login_attempts: LoginAttemptStore,
        mfa: MfaStore,
        sessions: SessionStore,
        events: SecurityEventStore,
        rate_windows: RateWindowStore,
    ) -> None:
        self._login_attempts = login_attempts
        self._mfa = mfa
        self._sessions = sessions
        self._events = events
        self._rate_windows = rate_windows

    async def GetLoginAttempts(  # noqa: N802 (name fixed by the proto)
        self, request: pb.GetLoginAttemptsRequest, context: Context
    ) -> pb.GetLoginAttemptsResponse:
        """Return the failure counters of the keys."""
        counters = await self._login_attempts.get(
            list(request.keys), _duration(request, "reset_after")
        )
        return pb.GetLoginAttemptsResponse(counters=_counters(counters))

    async def RecordLoginFailure(  # noqa: N802 (name fixed by the proto)
        self, request: pb.RecordLoginFailureRequest, context: Context
    ) -> pb.RecordLoginFailureResponse:
        """Count one failure on each key and return the counters after it."""
        counters = await self._login_attempts.record_failure(
            list(request.keys), _duration(request, "reset_after")
        )
        return pb.RecordLoginFailureResponse(counters=_counters(counters))

    async def ClearLoginAttempts(  # noqa: N802 (name fixed by the proto)
        self, request: pb.ClearLoginAttemptsRequest, context: Context
    ) -> pb.ClearLoginAttemptsResponse:
        """Forget the counters of the keys."""
        await self._login_attempts.clear(list(request.keys))
        return pb.ClearLoginAttemptsResponse()

    async def HitRateWindows(  # noqa: N802 (name fixed by the proto)
        self, request: pb.HitRateWindowsRequest, context: Context
    ) -> pb.HitRateWindowsResponse:
        """Count hits in the current window of each key and return the counts after them."""
        hits = [WindowHit(hit.key, _duration(hit, "window")) for hit in request.hits]
        counts = await self._rate_windows.hit(hits, request.count)
        return pb.HitRateWindowsResponse(
            counts=[
                pb.RateWindowCount(
                    key=count.key, hits=count.hits, end_time=to_timestamp(count.ends_at)
                )
                for count in counts
            ]
        )

    async def GetMfa(  # noqa: N802 (name fixed by the proto)
        self, request: pb.GetMfaRequest, context: Context
    ) -> pb.GetMfaResponse:
        """Return an account's factor."""
        return pb.GetMfaResponse(mfa=_mfa(await self._mfa.get(request.account_id)))

    async def StartMfaEnrollment(  # noqa: N802 (name fixed by the proto)
        self, request: pb.StartMfaEnrollmentRequest, context: Context
    ) -> pb.StartMfaEnrollmentResponse:
        """Store a pending sealed secret."""
        await self._mfa.start_enrollment(request.account_id, request.pending_secret_sealed)
        return pb.StartMfaEnrollmentResponse()

    async def EnableMfa(  # noqa: N802 (name fixed by the proto)
        self, request: pb.EnableMfaRequest, context: Context
    ) -> pb.EnableMfaResponse:
        """Confirm the pending enrolment with its recovery codes, event and mail."""
        await self._mfa.enable(
            request.account_id,
            request.pending_secret_sealed,
            request.used_step,
            list(request.recovery_code_hashes),
            _event(request.event),
            enrollment_ttl=_duration(request, "enrollment_ttl"),
            mail=_mail(request),
        )
        return pb.EnableMfaResponse()

    async def DisableMfa(  # noqa: N802 (name fixed by the proto)
        self, request: pb.DisableMfaRequest, context: Context
    ) -> pb.DisableMfaResponse:
        """Remove the factor and its codes, with the event and mail."""
        await self._mfa.disable(request.account_id, _event(request.event), mail=_mail(request))
        return pb.DisableMfaResponse()

    async def ReplaceRecoveryCodes(  # noqa: N802 (name fixed by the proto)
        self, request: pb.ReplaceRecoveryCodesRequest, context: Context
    ) -> pb.ReplaceRecoveryCodesResponse:
        """Replace the recovery codes, with the event."""
        await self._mfa.replace_recovery_codes(
            request.account_id, list(request.recovery_code_hashes), _event(request.event)
        )
        return pb.ReplaceRecoveryCodesResponse()

    async def UseMfaCode(  # noqa: N802 (name fixed by the proto)
        self, request: pb.UseMfaCodeRequest, context: Context
    ) -> pb.UseMfaCodeResponse:
        """Use a TOTP step or a recovery code."""
        left = await self._mfa.use_code(request.account_id, _mfa_code(request.code))
        return pb.UseMfaCodeResponse(recovery_codes_left=left)

    async def FailMfaChallenge(  # noqa: N802 (name fixed by the proto)
        self, request: pb.FailMfaChallengeRequest, context: Context
    ) -> pb.FailMfaChallengeResponse:
        """Count a wrong code against a challenge."""
        left = await self._mfa.fail_challenge(
            request.token_hash,
            request.account_id,
            required_datetime(request, "expire_time"),
            request.max_attempts,
        )
        return pb.FailMfaChallengeResponse(attempts_left=left)

    async def CompleteMfaChallenge(  # noqa: N802 (name fixed by the proto)
        self, request: pb.CompleteMfaChallengeRequest, context: Context
    ) -> pb.CompleteMfaChallengeResponse:
        """Use a challenge and its code and start the session."""
        completed = await self._mfa.complete_challenge(
            ChallengeUse(
                token_hash=request.token_hash,
                expires_at=required_datetime(request, "expire_time"),
                secret_sealed=request.secret_sealed,
                clear_keys=list(request.clear_attempt_keys),
            ),
            _mfa_code(request.code),
            _new_session(request.session, path="session."),
        )
        return pb.CompleteMfaChallengeResponse(
            session=pb.CreateRefreshTokenResponse(
                family_id=str(completed.session.id),
                session_start_time=to_timestamp(completed.session.created_at),
            ),
            recovery_codes_left=completed.recovery_codes_left,
        )

    async def MarkSessionAuthenticated(  # noqa: N802 (name fixed by the proto)
        self, request: pb.MarkSessionAuthenticatedRequest, context: Context
    ) -> pb.MarkSessionAuthenticatedResponse:
        """Record a re-authentication of a session, with the event."""
        marked = await self._sessions.mark_authenticated(
            request.account_id, request.session_id, _event(request.event)
        )
        return pb.MarkSessionAuthenticatedResponse(auth_time=to_timestamp(marked))

    async def RecordSecurityEvent(  # noqa: N802 (name fixed by the proto)
        self, request: pb.RecordSecurityEventRequest, context: Context
    ) -> pb.RecordSecurityEventResponse:
        """Append an event, with its mail when asked."""
        recorded = await self._events.record(
            _event(request.event),
            mail=_mail(request),
            only_new_device=(request.mail_condition == pb.SECURITY_MAIL_CONDITION_NEW_DEVICE),
        )
        return pb.RecordSecurityEventResponse(recorded=recorded.recorded, mailed=recorded.mailed)

    async def ListSecurityEvents(  # noqa: N802 (name fixed by the proto)
        self, request: pb.ListSecurityEventsRequest, context: Context
    ) -> pb.ListSecurityEventsResponse:
        """Return a page of an account's events, newest first."""
        page = await self._events.page(request.account_id, request.page_size, request.before_id)
        return pb.ListSecurityEventsResponse(
            events=[_security_event(event) for event in page.events], more=page.more
        )


class MailOutboxServicer(pb_grpc.MailOutboxServiceServicer):
    """MailOutboxService over the outbox."""

    def __init__(self, outbox: MailOutbox) -> None:
        self._outbox = outbox

    async def ClaimMail(  # noqa: N802 (name fixed by the proto)
        self, request: pb.ClaimMailRequest, context: Context
    ) -> pb.ClaimMailResponse:
        """Take the sending lease and the mails due."""
        if not request.HasField("lease_duration"):
            raise invalid([FieldViolation("lease_duration", "is required")])
        claim = await self._outbox.claim(
            request.sender, _duration(request, "lease_duration"), request.limit
        )
        return pb.ClaimMailResponse(
            holds_lease=claim.holds_lease,
            mails=[
                pb.OutboxMail(
                    id=queued.id,
                    mail=pb.SealedMail(kind=queued.mail.kind, sealed=queued.mail.sealed),
                    attempts=queued.attempts,
                    create_time=to_timestamp(queued.created_at),
                )
                for queued in claim.mails
            ],
        )

    async def CompleteMail(  # noqa: N802 (name fixed by the proto)
        self, request: pb.CompleteMailRequest, context: Context
    ) -> pb.CompleteMailResponse:
        """Record the outcome of a claimed mail."""
        await self._outbox.complete(request.sender, request.id, _outcome(request), request.error)
        return pb.CompleteMailResponse()


class ProfileStoreServicer(pb_grpc.ProfileStoreServiceServicer):
    """ProfileStoreService over the profile repository."""

    def __init__(self, profiles: ProfileStore) -> None:
        self._profiles = profiles

    async def GetProfile(  # noqa: N802 (name fixed by the proto)
        self, request: pb.GetProfileRequest, context: Context
    ) -> pb.GetProfileResponse:
        """Return a profile by account id or username."""
        key = request.WhichOneof("key")
        if key == "account_id":
            profile = await self._profiles.by_account_id(request.account_id)
        elif key == "username":
            profile = await self._profiles.by_username(request.username)
        else:
            raise invalid([FieldViolation("key", "set account_id or username")])
        return pb.GetProfileResponse(profile=_profile(profile))

    async def UpdateProfile(  # noqa: N802 (name fixed by the proto)
        self, request: pb.UpdateProfileRequest, context: Context
    ) -> pb.UpdateProfileResponse:
        """Change the fields that are set and return the profile."""
        fields = ProfileFields(
            display_name=request.display_name if request.HasField("display_name") else None,
            bio=request.bio if request.HasField("bio") else None,
            website=request.website if request.HasField("website") else None,
            pronouns=request.pronouns if request.HasField("pronouns") else None,
            private=request.private if request.HasField("private") else None,
        )
        profile = await self._profiles.update(request.account_id, fields)
        return pb.UpdateProfileResponse(profile=_profile(profile))

    async def ChangeUsername(  # noqa: N802 (name fixed by the proto)
        self, request: pb.ChangeUsernameRequest, context: Context
    ) -> pb.ChangeUsernameResponse:
        """Rename an account within its cooldown and return the profile."""
        profile = await self._profiles.change_username(
            request.account_id, request.username, cooldown=_duration(request, "cooldown")
        )
        return pb.ChangeUsernameResponse(profile=_profile(profile))


class SocialGraphServicer(pb_grpc.SocialGraphServiceServicer):
    """SocialGraphService over the social graph repository."""

    def __init__(self, graph: SocialGraph) -> None:
        self._graph = graph

    async def GetRelationship(  # noqa: N802 (name fixed by the proto)
        self, request: pb.GetRelationshipRequest, context: Context
    ) -> pb.GetRelationshipResponse:
        """Return how the viewer relates to the account."""
        relation = await self._graph.relationship(request.viewer_id, request.account_id)
        return pb.GetRelationshipResponse(relationship=_relationship(relation))

    async def Follow(  # noqa: N802 (name fixed by the proto)
        self, request: pb.FollowRequest, context: Context
    ) -> pb.FollowResponse:
        """Follow, or ask to follow, an account."""
        relation = await self._graph.follow(request.follower_id, request.account_id)
        return pb.FollowResponse(relationship=_relationship(relation))

    async def Unfollow(  # noqa: N802 (name fixed by the proto)
        self, request: pb.UnfollowRequest, context: Context
    ) -> pb.UnfollowResponse:
        """Stop following an account, or withdraw the request."""
        relation = await self._graph.unfollow(request.follower_id, request.account_id)
        return pb.UnfollowResponse(relationship=_relationship(relation))

    async def DecideFollowRequest(  # noqa: N802 (name fixed by the proto)
        self, request: pb.DecideFollowRequestRequest, context: Context
    ) -> pb.DecideFollowRequestResponse:
        """Approve or deny a pending follow request."""
        relation = await self._graph.decide_request(
            request.account_id, request.requester_id, approve=request.approve
        )
        return pb.DecideFollowRequestResponse(relationship=_relationship(relation))

    async def RemoveFollower(  # noqa: N802 (name fixed by the proto)
        self, request: pb.RemoveFollowerRequest, context: Context
    ) -> pb.RemoveFollowerResponse:
        """Drop a follower."""
        relation = await self._graph.remove_follower(request.account_id, request.follower_id)
        return pb.RemoveFollowerResponse(relationship=_relationship(relation))

    async def ListFollows(  # noqa: N802 (name fixed by the proto)
        self, request: pb.ListFollowsRequest, context: Context
    ) -> pb.ListFollowsResponse:
        """Return one page of a follow list."""
        kind = _FOLLOW_LISTS.get(request.kind)
        if kind is None:
            raise invalid([FieldViolation("kind", "must be FOLLOWERS, FOLLOWING or REQUESTS")])
        page = await self._graph.list_follows(
            request.account_id,
            kind,
            viewer_id=request.viewer_id,
            page_size=request.page_size,
            before_position=request.before_position,
        )
        return pb.ListFollowsResponse(entries=_listed(page), more=page.more)

    async def Block(  # noqa: N802 (name fixed by the proto)
        self, request: pb.BlockRequest, context: Context
    ) -> pb.BlockResponse:
        """Block an account."""
        relation = await self._graph.block(request.blocker_id, request.account_id)
        return pb.BlockResponse(relationship=_relationship(relation))

    async def Unblock(  # noqa: N802 (name fixed by the proto)
        self, request: pb.UnblockRequest, context: Context
    ) -> pb.UnblockResponse:
        """Lift a block."""
        relation = await self._graph.unblock(request.blocker_id, request.account_id)
        return pb.UnblockResponse(relationship=_relationship(relation))

    async def ListBlocks(  # noqa: N802 (name fixed by the proto)
        self, request: pb.ListBlocksRequest, context: Context
    ) -> pb.ListBlocksResponse:
        """Return one page of an account's blocks."""
        page = await self._graph.list_blocks(
            request.account_id,
            page_size=request.page_size,
            before_position=request.before_position,
        )
        return pb.ListBlocksResponse(entries=_listed(page), more=page.more)

    async def SearchProfiles(  # noqa: N802 (name fixed by the proto)
        self, request: pb.SearchProfilesRequest, context: Context
    ) -> pb.SearchProfilesResponse:
        """Return one page of profiles matching a prefix."""
        after = None
        if request.HasField("after"):
            after = SearchPosition(
                rank=request.after.rank,
                key=request.after.key,
                account_id=_position_id(request.after.account_id),
            )
        page = await self._graph.search(
            request.prefix, viewer_id=request.viewer_id, page_size=request.page_size, after=after
        )
        results = [
            pb.SearchResult(
                profile=_summary(found.profile),
                position=pb.SearchPosition(
                    rank=found.position.rank,
                    key=found.position.key,
                    account_id=_id(found.position.account_id),
                ),
            )
            for found in page.results
        ]
        return pb.SearchProfilesResponse(results=results, more=page.more)


class ModerationServicer(pb_grpc.ModerationServiceServicer):
    """ModerationService over the moderation repository."""

    def __init__(self, moderation: ModerationStore) -> None:
        self._moderation = moderation

    async def GetAccountStatus(  # noqa: N802 (name fixed by the proto)
        self, request: pb.GetAccountStatusRequest, context: Context
    ) -> pb.GetAccountStatusResponse:
        """Return an account's status to an admin."""
        status = await self._moderation.status(request.actor_id, request.username)
        return pb.GetAccountStatusResponse(status=_account_status(status))

    async def BlockAccount(  # noqa: N802 (name fixed by the proto)
        self, request: pb.BlockAccountRequest, context: Context
    ) -> pb.BlockAccountResponse:
        """Block an account until a time."""
        status = await self._moderation.block(
            request.actor_id,
            request.username,
            until=required_datetime(request, "until"),
            reason=request.reason,
        )
        return pb.BlockAccountResponse(status=_account_status(status))

    async def UnblockAccount(  # noqa: N802 (name fixed by the proto)
        self, request: pb.UnblockAccountRequest, context: Context
    ) -> pb.UnblockAccountResponse:
        """Lift an account's block."""
        status = await self._moderation.unblock(
            request.actor_id, request.username, reason=request.reason
        )
        return pb.UnblockAccountResponse(status=_account_status(status))

    async def ListAuditEvents(  # noqa: N802 (name fixed by the proto)
        self, request: pb.ListAuditEventsRequest, context: Context
    ) -> pb.ListAuditEventsResponse:
        """Return a page of the audit log."""
        page = await self._moderation.audit_log(
            request.actor_id,
            username=request.username,
            page_size=request.page_size,
            before_id=request.before_id,
        )
        events = [
            pb.AuditEvent(
                id=entry.id,
                create_time=to_timestamp(entry.created_at),
                actor_username=entry.actor_username,
                action=entry.action,
                account_username=entry.account_username,
                reason=entry.reason,
                blocked_till=optional_timestamp(entry.blocked_till),
            )
            for entry in page.entries
        ]
        return pb.ListAuditEventsResponse(events=events, more=page.more)


class AccountLifecycleServicer(pb_grpc.AccountLifecycleServiceServicer):
    """AccountLifecycleService over the account lifecycle."""

    def __init__(self, lifecycle: AccountLifecycle) -> None:
        self._lifecycle = lifecycle

    async def DeactivateAccount(  # noqa: N802 (name fixed by the proto)
        self, request: pb.DeactivateAccountRequest, context: Context
    ) -> pb.DeactivateAccountResponse:
        """Deactivate an account and say when it will be deleted."""
        grace = _duration(request, "grace")
        if not timedelta(0) <= grace <= LONGEST_GRACE:
            raise invalid([FieldViolation("grace", "must be between 0 and 365 days")])
        delete_after = await self._lifecycle.deactivate(request.account_id, grace=grace)
        return pb.DeactivateAccountResponse(delete_time=to_timestamp(delete_after))


class MediaStoreServicer(pb_grpc.MediaStoreServiceServicer):
    """MediaStoreService over the image repository and the blob-collection queue."""

    def __init__(self, images: ImageStore, collections: BlobCollections) -> None:
        self._images = images
        self._collections = collections

    async def ClaimBlobCollections(  # noqa: N802 (name fixed by the proto)
        self, request: pb.ClaimBlobCollectionsRequest, context: Context
    ) -> pb.ClaimBlobCollectionsResponse:
        """Claim queued blobs for a while."""
        keys = await self._collections.claim(request.limit, _duration(request, "lease"))
        return pb.ClaimBlobCollectionsResponse(sha256=keys)

    async def CompleteBlobCollection(  # noqa: N802 (name fixed by the proto)
        self, request: pb.CompleteBlobCollectionRequest, context: Context
    ) -> pb.CompleteBlobCollectionResponse:
        """Take a blob off the queue; say whether an image names it."""
        referenced = await self._collections.complete(request.sha256)
        return pb.CompleteBlobCollectionResponse(referenced=referenced)

    async def CreateImage(  # noqa: N802 (name fixed by the proto)
        self, request: pb.CreateImageRequest, context: Context
    ) -> pb.CreateImageResponse:
        """Record an image's metadata and renditions within its owner's quota."""
        image = request.image
        stored = await self._images.create(
            NewImage(
                owner_id=image.owner_id,
                content_type=image.content_type,
                size_bytes=image.size_bytes,
                width=image.width,
                height=image.height,
                sha256=image.sha256,
                placeholder=image.placeholder,
                original_kept=image.original_kept,
                renditions=_renditions_from(image.renditions),
            ),
            quota_bytes=request.quota_bytes,
        )
        return pb.CreateImageResponse(image=_image(stored))

    async def GetImage(  # noqa: N802 (name fixed by the proto)
        self, request: pb.GetImageRequest, context: Context
    ) -> pb.GetImageResponse:
        """Return an image's metadata."""
        return pb.GetImageResponse(image=_image(await self._images.get(request.image_id)))

    async def GetImageAccess(  # noqa: N802 (name fixed by the proto)
        self, request: pb.GetImageAccessRequest, context: Context
    ) -> pb.GetImageAccessResponse:
        """Return an image with the facts its visibility depends on."""
        access = await self._images.access(request.image_id, request.viewer_id)
        return pb.GetImageAccessResponse(
            image=_image(access.image),
            owner_private=access.owner_private,
            owner_hidden=access.owner_hidden,
            viewer_follows=access.viewer_follows,
            blocked=access.blocked,
            viewer_admin=access.viewer_admin,
        )

    async def ListImages(  # noqa: N802 (name fixed by the proto)
        self, request: pb.ListImagesRequest, context: Context
    ) -> pb.ListImagesResponse:
        """Return a page of an account's images."""
        images, more = await self._images.page(
            request.owner_id, page_size=request.page_size, before_position=request.before_position
        )
        return pb.ListImagesResponse(images=[_image(image) for image in images], more=more)

    async def DeleteImage(  # noqa: N802 (name fixed by the proto)
        self, request: pb.DeleteImageRequest, context: Context
    ) -> pb.DeleteImageResponse:
        """Delete an image for its owner or an admin."""
        image = await self._images.delete(request.actor_id, request.image_id)
        return pb.DeleteImageResponse(image=_image(image))

    async def AddRenditions(  # noqa: N802 (name fixed by the proto)
        self, request: pb.AddRenditionsRequest, context: Context
    ) -> pb.AddRenditionsResponse:
        """Add the renditions an image lacks."""
        image = await self._images.add_renditions(
            request.image_id, _renditions_from(request.renditions), request.placeholder
        )
        return pb.AddRenditionsResponse(image=_image(image))

    async def GetMediaUsage(  # noqa: N802 (name fixed by the proto)
        self, request: pb.GetMediaUsageRequest, context: Context
    ) -> pb.GetMediaUsageResponse:
        """Return an account's media usage."""
        return pb.GetMediaUsageResponse(used_bytes=await self._images.usage(request.account_id))

    async def QueueUnreferencedBlobs(  # noqa: N802 (name fixed by the proto)
        self, request: pb.QueueUnreferencedBlobsRequest, context: Context
    ) -> pb.QueueUnreferencedBlobsResponse:
        """Queue the listed blobs that no image names."""
        queued = await self._images.queue_unreferenced(list(request.sha256))
        return pb.QueueUnreferencedBlobsResponse(sha256=queued)

    async def SetAvatar(  # noqa: N802 (name fixed by the proto)
        self, request: pb.SetAvatarRequest, context: Context
    ) -> pb.SetAvatarResponse:
        """Make one of the owner's images their avatar."""
        image = await self._images.set_avatar(request.account_id, request.image_id)
        return pb.SetAvatarResponse(image=_image(image))


class ChangeFeedServicer(pb_grpc.ChangeFeedServiceServicer):
    """ChangeFeedService over the change feed."""

    def __init__(self, feed: ChangeFeed) -> None:
        self._feed = feed

    async def SubscribeChanges(  # noqa: N802 (name fixed by the proto)
        self, request: pb.SubscribeChangesRequest, context: Context
    ) -> AsyncIterator[pb.SubscribeChangesResponse]:
        """Stream the replay, then live changes and heartbeats."""
        async for event in self._feed.subscribe(request.topics, request.after_position):
            yield _feed_event(event)


def _feed_event(event: FeedEvent) -> pb.SubscribeChangesResponse:
    """Convert a feed event to protobuf."""
    if isinstance(event, Change):
        return pb.SubscribeChangesResponse(
            change=pb.Change(
                position=event.position,
                topic=event.topic,
                key=event.key,
                record_time=to_timestamp(event.recorded_at),
            )
        )
    if isinstance(event, Heartbeat):
        return pb.SubscribeChangesResponse(
            heartbeat=pb.Heartbeat(position=event.position, time=to_timestamp(event.at))
        )
    return pb.SubscribeChangesResponse(reset=pb.Reset(reason=event.reason, position=event.position))


def _duration(request: Message, field: str) -> timedelta:
    """Return a request's Duration field as a timedelta (zero when unset); InvalidArgument when
    outside the representable range."""
    duration: Duration = getattr(request, field)
    try:
        return duration.ToTimedelta()
    except (ValueError, OverflowError):
        raise invalid([FieldViolation(field, "is not a valid duration")]) from None


def _purpose(value: pb.AccountTokenPurpose.ValueType) -> TokenPurpose:
    """Return the purpose a wire enum value names; InvalidArgument for any other value."""
    purpose = _PURPOSES.get(value)
    if purpose is None:
        raise invalid([FieldViolation("purpose", "must be specified")])
    return purpose


def _new_token(request: Message, field: str) -> NewToken | None:
    """Return a request's NewAccountToken field, None when unset; InvalidArgument when its
    expiry is missing."""
    if not request.HasField(field):
        return None
    token: pb.NewAccountToken = getattr(request, field)
    return NewToken(
        token_hash=token.token_hash,
        expires_at=required_datetime(token, "expire_time", path=f"{field}.expire_time"),
    )


def _mail(
    request: pb.CreateAccountRequest
    | pb.ReplacePasswordHashRequest
    | pb.IssueAccountTokenRequest
    | pb.UseAccountTokenRequest
    | pb.EnableMfaRequest
    | pb.DisableMfaRequest
    | pb.RecordSecurityEventRequest
    | pb.RequestEmailChangeRequest,
) -> Mail | None:
    """Return a request's SealedMail field `mail`, None when unset."""
    if not request.HasField("mail"):
        return None
    return _sealed(request.mail)


def _token_and_mail(
    request: pb.IssueAccountTokenRequest | pb.RequestEmailChangeRequest,
) -> tuple[NewToken, Mail]:
    """A request's token and the mail that carries it; InvalidArgument naming each missing."""
    token = _new_token(request, "token")
    mail = _mail(request)
    if token is None or mail is None:
        raise invalid(
            [
                FieldViolation(name, "is required")
                for name in ("token", "mail")
                if not request.HasField(name)
            ]
        )
    return token, mail


def _sealed(mail: pb.SealedMail) -> Mail:
    """The domain form of a SealedMail."""
    return Mail(kind=mail.kind, sealed=mail.sealed)


def _new_session(request: pb.CreateRefreshTokenRequest, *, path: str = "") -> NewSession:
    """Convert a wire login to a record; InvalidArgument (fields named under path) when a
    time is missing."""
    return NewSession(
        account_id=request.account_id,
        token_hash=request.token_hash,
        expires_at=required_datetime(request, "expire_time", path=f"{path}expire_time"),
        ends_at=required_datetime(request, "session_end_time", path=f"{path}session_end_time"),
        remembered=request.remembered,
        device=_device(request.device),
    )


def _event(event: pb.NewSecurityEvent) -> NewSecurityEvent:
    """Convert a wire event (empty when unset) to a record; an unspecified or unknown kind
    becomes the empty kind, which the repository refuses."""
    return NewSecurityEvent(
        kind=_EVENT_KINDS.get(event.kind, ""),
        account_id=event.account_id,
        device=_device(event.device),
        session_id=event.session_id,
        detail=event.detail,
    )


def _mfa_code(code: pb.MfaCode) -> MfaCode | None:
    """Convert a wire code to a record; None when it names neither a step nor a recovery code."""
    which = code.WhichOneof("code")
    if which == "step":
        return TotpStep(code.step)
    if which == "recovery_code_hash":
        return RecoveryCodeUse(code.recovery_code_hash)
    return None


def _counters(counters: list[LoginAttemptCounter]) -> list[pb.LoginAttemptCounter]:
    """Convert login-attempt counters to protobuf (no time when there is none)."""
    return [
        pb.LoginAttemptCounter(
            key=counter.key,
            failures=counter.failures,
            last_failure_time=(
                None if counter.last_failure_at is None else to_timestamp(counter.last_failure_at)
            ),
        )
        for counter in counters
    ]


def _mfa(mfa: MfaRecord) -> pb.MfaRecord:
    """Convert a factor record to protobuf (times unset when there are none)."""
    return pb.MfaRecord(
        enabled=mfa.enabled,
        secret_sealed=mfa.secret_sealed,
        last_used_step=mfa.last_used_step,
        enable_time=None if mfa.enabled_at is None else to_timestamp(mfa.enabled_at),
        recovery_codes_left=mfa.recovery_codes_left,
        pending_secret_sealed=mfa.pending_secret_sealed,
        pending_start_time=(
            None if mfa.pending_started_at is None else to_timestamp(mfa.pending_started_at)
        ),
    )


def _security_event(event: SecurityEventRecord) -> pb.SecurityEventRecord:
    """Convert a security-log entry to protobuf."""
    return pb.SecurityEventRecord(
        id=event.id,
        kind=_EVENT_KIND_VALUES.get(event.kind, pb.SECURITY_EVENT_KIND_UNSPECIFIED),
        create_time=to_timestamp(event.created_at),
        device=pb.SessionDevice(
            user_agent=event.device.user_agent, client_ip=event.device.client_ip
        ),
        session_id=_id(event.session_id),
        detail=event.detail,
    )


def _device(device: pb.SessionDevice) -> Device:
    """Convert a wire device (empty when unset) to a record."""
    return Device(user_agent=device.user_agent, client_ip=device.client_ip)


def _outcome(request: pb.CompleteMailRequest) -> MailOutcome:
    """Return what a CompleteMailRequest says happened; InvalidArgument when it says nothing."""
    which = request.WhichOneof("outcome")
    if which == "retry_time":
        return Retry(at=required_datetime(request, "retry_time"))
    if which == "sent" and request.sent:
        return Sent()
    if which == "given_up" and request.given_up:
        return GivenUp()
    raise invalid([FieldViolation("outcome", "set sent, retry_time or given_up")])


def _id(value: uuid.UUID | None) -> str:
    """Render an id for the wire; no id is the empty string."""
    return "" if value is None else str(value)


def _account(account: AccountRecord) -> pb.AccountRecord:
    """Convert an account record to protobuf."""
    return pb.AccountRecord(
        id=_id(account.id),
        email=account.email,
        username=account.username,
        create_time=to_timestamp(account.created_at),
        email_verified=account.email_verified,
    )


def _session(session: SessionRecord) -> pb.SessionRecord:
    """Convert a session record to protobuf."""
    return pb.SessionRecord(
        id=_id(session.id),
        create_time=to_timestamp(session.created_at),
        last_use_time=to_timestamp(session.last_used_at),
        expire_time=to_timestamp(session.expires_at),
        remembered=session.remembered,
        device=pb.SessionDevice(
            user_agent=session.device.user_agent, client_ip=session.device.client_ip
        ),
    )


def _profile(profile: ProfileRecord) -> pb.ProfileRecord:
    """Convert a profile record to protobuf."""
    return pb.ProfileRecord(
        account_id=_id(profile.account_id),
        username=profile.username,
        display_name=profile.display_name,
        bio=profile.bio,
        avatar_image_id=_id(profile.avatar_image_id),
        create_time=to_timestamp(profile.account_created_at),
        update_time=to_timestamp(profile.updated_at),
        website=profile.website,
        pronouns=profile.pronouns,
        private=profile.private,
        follower_count=profile.follower_count,
        following_count=profile.following_count,
        post_count=profile.post_count,
        email=profile.email,
    )


_FOLLOW_LISTS = {
    pb.FOLLOW_LIST_KIND_FOLLOWERS: FollowList.FOLLOWERS,
    pb.FOLLOW_LIST_KIND_FOLLOWING: FollowList.FOLLOWING,
    pb.FOLLOW_LIST_KIND_REQUESTS: FollowList.REQUESTS,
}


def _position_id(value: str) -> uuid.UUID:
    """The account id of a search position; InvalidArgument when it is not one."""
    try:
        return uuid.UUID(value) if value else uuid.UUID(int=0)
    except ValueError:
        raise invalid([FieldViolation("after.account_id", "must be an account id")]) from None


def _account_status(status: AccountStatus) -> pb.AccountStatus:
    """Convert an account status to protobuf."""
    return pb.AccountStatus(
        account_id=_id(status.account_id),
        username=status.username,
        email=status.email,
        role=status.role,
        create_time=to_timestamp(status.created_at),
        email_verified=status.email_verified,
        blocked_till=optional_timestamp(status.blocked_till),
        blocked_reason=status.blocked_reason,
    )


def _relationship(relation: Relationship) -> pb.Relationship:
    """Convert a relationship to protobuf."""
    return pb.Relationship(
        following=relation.following,
        followed_by=relation.followed_by,
        requested=relation.requested,
        requested_by=relation.requested_by,
        blocking=relation.blocking,
        blocked_by=relation.blocked_by,
    )


def _summary(profile: ProfileSummary) -> pb.ProfileSummary:
    """Convert a profile summary to protobuf."""
    return pb.ProfileSummary(
        account_id=_id(profile.account_id),
        username=profile.username,
        display_name=profile.display_name,
        avatar_image_id=_id(profile.avatar_image_id),
        private=profile.private,
    )


def _listed(page: ListedPage) -> list[pb.ListedProfile]:
    """Convert a page's entries to protobuf."""
    return [
        pb.ListedProfile(profile=_summary(entry.profile), position=entry.position)
        for entry in page.entries
    ]


def _image(image: ImageRecord) -> pb.ImageRecord:
    """Convert an image record to protobuf."""
    return pb.ImageRecord(
        id=_id(image.id),
        owner_id=_id(image.owner_id),
        content_type=image.content_type,
        size_bytes=image.size_bytes,
        width=image.width,
        height=image.height,
        sha256=image.sha256,
        create_time=to_timestamp(image.created_at),
        placeholder=image.placeholder,
        original_kept=image.original_kept,
        stored_bytes=image.stored_bytes,
        position=image.position,
        renditions=[
            pb.RenditionRecord(
                variant=r.variant,
                format=r.format,
                content_type=r.content_type,
                sha256=r.sha256,
                size_bytes=r.size_bytes,
                width=r.width,
                height=r.height,
            )
            for r in image.renditions
        ],
    )


def _renditions_from(renditions: Iterable[pb.RenditionRecord]) -> tuple[Rendition, ...]:
    """Convert protobuf renditions to records."""
    return tuple(
        Rendition(
            variant=r.variant,
            format=r.format,
            content_type=r.content_type,
            sha256=r.sha256,
            size_bytes=r.size_bytes,
            width=r.width,
            height=r.height,
        )
        for r in renditions
    )
