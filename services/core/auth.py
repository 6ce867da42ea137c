"""Bearer tokens: who is calling, for which org, with which permission keys.

Algorithms, audience and issuer come from settings, never from the token, so
``alg: none`` or an HS256 token signed with a public key is simply refused.
Event-link tokens (for browsers' EventSource, which cannot send headers) are a
separate audience: they open one job's event stream (or the caller's feed) and
nothing else. A job's link keeps opening that job's stream while the job runs,
however long, and for ``FERRY_EVENTS_TOKEN_TTL`` seconds after it ended (or after
the link was made, whichever is later), so an EventSource reconnects until it has
seen the end. The feed's link lasts ``FERRY_EVENTS_FEED_TTL``. Link tokens (a third
audience) let a browser follow one download link as its caller, for a minute: GET
of one path, nothing else.

Who may do what to a job is one rule, ``authorize``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import jwt
import msgspec

from services.core.errors import Forbidden, SettingsError, Unauthorized
from services.core.jobs import STREAM_ENDS, Job
from services.core.settings import Settings

EVENTS_AUDIENCE = "ferry:events"
LINK_AUDIENCE = "ferry:link"
LINK_TTL = 60
UPLOAD_AUDIENCE = "ferry:upload"
ADMIN = "ferry.admin"

# What a caller does to a job. "view" covers reading it, its events, its file and its
# error report; the others change it.
Action = Literal["view", "cancel", "map", "commit", "rollback"]
_VERBS: dict[Action, str] = {
    "view": "see",
    "cancel": "cancel",
    "map": "change the mapping of",
    "commit": "commit",
    "rollback": "roll back",
}
MAX_CLAIM = 200  # characters of a sub or org claim


class Principal(msgspec.Struct, frozen=True):
    """The caller: a user or a service, in one org, with permission keys."""

    sub: str
    org: str
    perms: frozenset[str] = frozenset()

    def can(self, perm: str) -> bool:
        return perm in self.perms

    def require(self, perm: str) -> None:
        if perm not in self.perms:
            raise Forbidden(f"this token lacks the permission {perm!r}")


def authorize(principal: Principal, job: Job, action: Action) -> None:
    """The one rule for every job action (the caller's org is checked before: 404).

    An admin (``ferry.admin``, or ``<dataset>.admin``) may do anything. Anyone else
    may see a job of a dataset they may read or write; only the user who started it
    may change it (cancel, mapping, commit, rollback), and only while they still hold
    the permission it was started with (``.read`` for an export, ``.write`` for an
    import). Otherwise 403.
    """
    ds = job.dataset
    if principal.can(ADMIN) or principal.can(f"{ds}.admin"):
        return
    if action == "view":
        if not (principal.can(f"{ds}.read") or principal.can(f"{ds}.write")):
            raise Forbidden(f"this token lacks the permission '{ds}.read'")
        return
    if job.user_id != principal.sub:
        raise Forbidden(
            f"only the user who started this {job.kind} (or an admin: {ADMIN!r} or "
            f"'{ds}.admin') can {_VERBS[action]} it"
        )
    principal.require(f"{ds}.{'read' if job.kind == 'export' else 'write'}")


class EventsLink(msgspec.Struct, frozen=True):
    """A verified event-link token: who it speaks for, and until when it surely holds."""

    principal: Principal
    expires_at: float

    def check(self, job: Job | None, *, grace: int) -> None:
        """Unauthorized unless the link still opens ``job``'s stream (None: the feed).

        Past its own expiry a job's link holds while the job runs, and for ``grace``
        seconds after it ended.
        """
        now = time.time()
        if now < self.expires_at:
            return
        if job is not None:
            if job.status not in STREAM_ENDS:
                return
            ended_at = job.finished_at or job.updated_at  # validated: awaits its user
            if ended_at.timestamp() + grace > now:
                return
        raise Unauthorized("the event link has expired; fetch the job again")


class TokenVerifier:
    """Checks bearer and event-link tokens against the configured keys."""

    def __init__(self, settings: Settings) -> None:
        if not settings.jwt_secret and not settings.jwt_jwks_url:
            raise SettingsError("set FERRY_JWT_SECRET or FERRY_JWT_JWKS_URL")
        if not settings.jwt_secret:
            raise SettingsError("FERRY_JWT_SECRET is needed to sign event links")
        self.settings = settings
        self._jwks = jwt.PyJWKClient(settings.jwt_jwks_url) if settings.jwt_jwks_url else None

    def verify(self, token: str) -> Principal:
        """A Principal from a bearer token, or Unauthorized. May fetch JWKS (blocking)."""
        s = self.settings
        try:
            if self._jwks is not None:
                key: Any = self._jwks.get_signing_key_from_jwt(token).key
                algorithms = ["RS256"]
            else:
                key, algorithms = s.jwt_secret, ["HS256"]
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                options={"require": ["exp", "sub", "org"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is not valid: {exc}") from None
        return _principal(claims)

    def mint_events_token(self, principal: Principal, job_id: object | None) -> str:
        """A token opening one job's events (or the caller's feed when None)."""
        s = self.settings
        ttl = s.events_token_ttl if job_id is not None else s.events_feed_ttl
        claims = {"job": str(job_id) if job_id is not None else None}
        return self._sign(principal, claims, EVENTS_AUDIENCE, ttl)[0]

    def verify_events_token(self, token: str, job_id: object | None) -> EventsLink:
        """The link behind an event-link token, if it was made for this stream; whether
        it still holds is ``EventsLink.check``'s to say (a job's link outlives ``exp``)."""
        claims = self._unsign(token, EVENTS_AUDIENCE, "event link", "", verify_exp=False)
        wanted = str(job_id) if job_id is not None else None
        if claims.get("job") != wanted:
            raise Unauthorized("the event link was made for another stream")
        principal = _principal({"sub": claims["sub"], "org": claims["org"]})
        return EventsLink(principal, float(claims["exp"]))

    def mint_link_token(self, principal: Principal, path: str) -> tuple[str, int]:
        """A token letting a browser GET ``path`` as this caller; and its expiry (epoch)."""
        claims = {"perms": sorted(principal.perms), "path": path}
        return self._sign(principal, claims, LINK_AUDIENCE, LINK_TTL)

    def verify_link_token(self, token: str, path: str) -> Principal:
        """The caller behind a link token, if it was made for this path."""
        claims = self._unsign(token, LINK_AUDIENCE, "link", "ask for a new one")
        if claims.get("path") != path:
            raise Unauthorized("the link was made for another path")
        return _principal(claims)

    def _sign(
        self, principal: Principal, claims: dict[str, Any], audience: str, ttl: int
    ) -> tuple[str, int]:
        now = int(time.time())
        claims = {
            "sub": principal.sub,
            "org": principal.org,
            **claims,
            "aud": audience,
            "iss": self.settings.jwt_issuer,
            "iat": now,
            "exp": now + ttl,
        }
        return jwt.encode(claims, self.settings.jwt_secret, algorithm="HS256"), now + ttl

    def _unsign(
        self, token: str, audience: str, what: str, remedy: str, *, verify_exp: bool = True
    ) -> dict[str, Any]:
        """The claims of a token this api signed for ``audience``, or Unauthorized."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.settings.jwt_secret,
                algorithms=["HS256"],
                audience=audience,
                issuer=self.settings.jwt_issuer,
                options={"require": ["exp", "sub", "org"], "verify_exp": verify_exp},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized(f"the {what} has expired; {remedy}") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the {what} is not valid: {exc}") from None
        return claims

    def mint_upload_token(self, upload_id: object, org: str, expires_at: int) -> str:
        """The credential of a direct-upload URL of the local folder: one upload, until
        ``expires_at`` (Unix time)."""
        claims = {
            "upl": str(upload_id),
            "org": org,
            "aud": UPLOAD_AUDIENCE,
            "iss": self.settings.jwt_issuer,
            "exp": expires_at,
        }
        return jwt.encode(claims, self.settings.jwt_secret, algorithm="HS256")

    def verify_upload_token(self, token: str, upload_id: object) -> str:
        """The org of a direct-upload URL made for this upload; Forbidden otherwise."""
        try:
            claims = jwt.decode(
                token,
                self.settings.jwt_secret,
                algorithms=["HS256"],
                audience=UPLOAD_AUDIENCE,
                issuer=self.settings.jwt_issuer,
                options={"require": ["exp", "upl", "org"]},
            )
        except jwt.ExpiredSignatureError:
            raise Forbidden("the upload URL has expired; ask for a new one") from None
        except jwt.PyJWTError as exc:
            raise Forbidden(f"the upload URL is not valid: {exc}") from None
        if claims["upl"] != str(upload_id):
            raise Forbidden("the upload URL was made for another upload")
        return str(claims["org"])


def _principal(claims: dict[str, Any]) -> Principal:
    """The caller a verified token names; a claim of the wrong shape is a 401, never
    a value that reaches the database (PostgreSQL text holds no NUL)."""
    for name in ("sub", "org"):
        value = claims[name]
        if not isinstance(value, str) or not 0 < len(value) <= MAX_CLAIM or "\x00" in value:
            raise Unauthorized(
                f"the token's {name} claim must be a string of 1 to {MAX_CLAIM} characters "
                "without NUL"
            )
    perms = claims.get("perms", [])
    if isinstance(perms, str):
        perms = perms.split()
    if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
        raise Unauthorized(
            "the token's perms claim must be a list of strings (or one space-separated string)"
        )
    return Principal(sub=claims["sub"], org=claims["org"], perms=frozenset(perms))


def mint_token(
    settings: Settings,
    *,
    sub: str,
    org: str,
    perms: list[str],
    ttl: int = 3600,
    key: Any = None,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
) -> str:
    """A bearer token for ``ferry token``, the demo user and tests."""
    now = int(time.time())
    claims = {
        "sub": sub,
        "org": org,
        "perms": perms,
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key or settings.jwt_secret, algorithm=algorithm, headers=headers)
