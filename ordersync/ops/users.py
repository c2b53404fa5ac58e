"""The dashboard's accounts, their sessions and failed sign-ins, in Redis: shared by the dashboard (sign-in,
the users page) and ``ordersync users`` (which also makes the first admin of a fresh install).

- An account (:class:`User`) has a role: ``viewer`` reads; ``operator`` also acts on orders, dead letters
  and alerts and sees buyers' personal data; ``admin`` also manages the accounts. Its password is kept
  only as an Argon2id hash (pwdlib); a disabled account cannot sign in.
- A session lives under the SHA-256 of its cookie (a copy of Redis holds no usable cookie), with its
  CSRF token, and ends after ``dashboard.session_idle_s`` without a request or ``dashboard.session_max_s``
  after the sign-in, whichever comes first, reckoned on the dashboard's clock. Changing a user's role or
  password, or disabling the user, ends every session of that user.
- Failed sign-ins are counted per user name, existing or not (so a lock says nothing about which names
  exist): ``dashboard.sign_in_failures`` in a row lock the name for ``dashboard.sign_in_lock_s``.

Every key is in the catalogue (:mod:`ordersync.state.keys`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast, get_args

import redis.asyncio as aioredis
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from ordersync.clock import SYSTEM_CLOCK, Clock
from ordersync.schemas.events import DashboardRole
from ordersync.state import keys

Role = DashboardRole
#: The roles, each allowed what the one before it is, and more.
ROLES: tuple[Role, ...] = get_args(DashboardRole)
ROLE_RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}
#: What each role may do, for people (pages, CLI help, docs).
ROLE_MEANINGS: dict[Role, str] = {
    "viewer": "reads the pages and the API",
    "operator": "also acts on orders, dead letters and alerts, sees buyers' personal data and the audit",
    "admin": "also manages the accounts",
}

#: Lower-case letters, digits and ``. _ @ -``; 1 to 64 characters, starting with a letter or digit.
USER_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
#: Who acts without an account: the shared tokens and open reading. No account may take these names.
RESERVED_NAMES = frozenset({"api-token", "read-token", "anonymous", "unknown", "system"})
MIN_PASSWORD_CHARS = 12
#: Longer is refused: hashing a megabyte-long "password" is work nobody should be able to ask for.
MAX_PASSWORD_CHARS = 1024

_HASHER = PasswordHash((Argon2Hasher(),))


def role_at_least(role: str | None, needed: Role) -> bool:
    """Whether ``role`` may do what ``needed`` may (None: no role at all)."""
    return role is not None and ROLE_RANK.get(role, -1) >= ROLE_RANK[needed]


class UserProblem(ValueError):
    """What was asked is not valid (a name, a role, a password, the last admin); nothing was changed."""


class UserExists(UserProblem):
    """An account of that name exists already."""


class UserNotFound(LookupError):
    """No account of that name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no user {name!r}")
        self.name = name


class User(BaseModel):
    """One account, as Redis keeps it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    role: Role
    #: Argon2id, pwdlib's format; never shown, logged or audited.
    password_hash: str = Field(repr=False)
    disabled: bool = False
    #: Signs in only through the OpenID Connect provider (dashboard.oidc): no password.
    sso: bool = False
    created_at: AwareDatetime
    created_by: str
    changed_at: AwareDatetime
    changed_by: str

    def public(self) -> dict[str, Any]:
        """The account as the API and the CLI show it: everything but the hash."""
        return self.model_dump(mode="json", exclude={"password_hash"})


def checked_name(name: str) -> str:
    """``name`` as accounts are keyed (trimmed, lower case); raises :class:`UserProblem` when it is not
    a valid user name."""
    cleaned = name.strip().lower()
    if not USER_NAME.match(cleaned):
        raise UserProblem(
            f"{name[:64]!r} is not a user name: 1 to 64 lower-case letters, digits and . _ @ -, starting"
            " with a letter or digit"
        )
    if cleaned in RESERVED_NAMES:
        raise UserProblem(f"{cleaned!r} is reserved (it names the shared tokens or open reading)")
    return cleaned


def checked_role(role: str) -> Role:
    if role not in ROLES:
        raise UserProblem(f"{role[:32]!r} is not a role: one of {', '.join(ROLES)}")
    return role


def checked_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise UserProblem(f"the password is too short: at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise UserProblem(f"the password is too long: at most {MAX_PASSWORD_CHARS} characters")
    if not password.strip():
        raise UserProblem("the password is only spaces")
    return password


def hash_password(password: str) -> str:
    """The Argon2id hash of ``password`` (blocking, tens of milliseconds: call it in a thread)."""
    return _HASHER.hash(password)


def password_matches(password: str, password_hash: str) -> bool:
    """Constant-time (Argon2's own) check of ``password`` against ``password_hash`` (blocking)."""
    try:
        return _HASHER.verify(password, password_hash)
    except Exception:  # an unreadable hash (hand-edited Redis) matches nothing
        return False


_STAND_IN: list[str] = []


def _stand_in_hash() -> str:
    """A hash of a random password, checked for names that have no account so that a sign-in takes
    as long whether the name exists or not."""
    if not _STAND_IN:
        _STAND_IN.append(hash_password(secrets.token_urlsafe(24)))
    return _STAND_IN[0]


class UserStore:
    """The accounts (one Redis hash: name -> :class:`User` as JSON)."""

    def __init__(self, redis: aioredis.Redis, prefix: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.redis = redis
        self.prefix = prefix
        self.clock = clock
        self.key = keys.USERS.key(prefix)
        self.sessions = SessionStore(redis, prefix)

    async def any(self) -> bool:
        """Whether any account exists: from the first one on, the dashboard needs a sign-in."""
        return bool(await self.redis.hlen(self.key))

    async def get(self, name: str) -> User | None:
        raw = cast(str | None, await self.redis.hget(self.key, name))
        if raw is None:
            return None
        try:
            return User.model_validate_json(raw)
        except ValidationError:
            return None  # a hand-edited record is no account

    async def list(self) -> list[User]:
        raw = cast(dict[str, str], await self.redis.hgetall(self.key))
        found = []
        for value in raw.values():
            try:
                found.append(User.model_validate_json(value))
            except ValidationError:
                continue
        return sorted(found, key=lambda u: u.name)

    async def require(self, name: str) -> User:
        user = await self.get(name)
        if user is None:
            raise UserNotFound(name)
        return user

    async def add(self, name: str, role: str, password: str, by: str) -> User:
        """A new account; raises :class:`UserExists` or :class:`UserProblem`."""
        name, checked = checked_name(name), checked_role(role)
        checked_password(password)
        now = self.clock.now()
        user = User(
            name=name,
            role=checked,
            password_hash=await asyncio.to_thread(hash_password, password),
            created_at=now,
            created_by=by,
            changed_at=now,
            changed_by=by,
        )
        if not await self.redis.hsetnx(self.key, name, user.model_dump_json()):
            raise UserExists(f"user {name!r} exists already")
        return user

    async def set_role(self, name: str, role: str, by: str) -> tuple[Role, User]:
        """The user's role changed (their sessions end); returns the role before and the account."""
        user = await self.require(name)
        new_role = checked_role(role)
        if new_role == user.role:
            return user.role, user
        if user.role == "admin" and not user.disabled:
            await self._keep_an_admin(user.name, "lose the admin role")
        changed = await self._save(user, by, role=new_role)
        await self.sessions.end_all(user.name)
        return user.role, changed

    async def set_disabled(self, name: str, disabled: bool, by: str) -> User:
        """Disable (every session ends, no sign-in) or enable the user."""
        user = await self.require(name)
        if disabled and user.role == "admin" and not user.disabled:
            await self._keep_an_admin(user.name, "be disabled")
        changed = await self._save(user, by, disabled=disabled)
        if disabled:
            await self.sessions.end_all(user.name)
        return changed

    async def set_password(self, name: str, password: str, by: str) -> User:
        """A new password (every session of the user ends)."""
        user = await self.require(name)
        checked_password(password)
        password_hash = await asyncio.to_thread(hash_password, password)
        changed = await self._save(user, by, password_hash=password_hash)
        await self.sessions.end_all(user.name)
        return changed

    async def authenticate(self, name: str, password: str) -> tuple[User | None, str]:
        """The enabled account ``name`` whose password is ``password``, else None and why (for the
        audit, never for the person signing in): unknown user, wrong password, disabled. Takes as long
        for a name without an account."""
        user = await self.get(name)
        stored = user.password_hash if user is not None and not user.sso else _stand_in_hash()
        password = password[:MAX_PASSWORD_CHARS]
        matches = await asyncio.to_thread(password_matches, password, stored)
        if user is None:
            return None, "unknown user name"
        if user.sso:
            return None, "the user signs in with single sign-on only"
        if not matches:
            return None, "wrong password"
        if user.disabled:
            return None, "the user is disabled"
        return user, ""

    async def single_sign_on(
        self, name: str, role: Role, *, create: bool, by: str
    ) -> tuple[User | None, str]:
        """The account of a user the OpenID Connect provider vouched for, with the role the provider's
        claims give (which replaces the one kept: the provider decides; a change ends the user's other
        sessions), else None and why. A new account (``create``) or one that had a password becomes a
        single sign-on account without one. A disabled account stays refused."""
        name, role = checked_name(name), checked_role(role)
        user = await self.get(name)
        if user is None:
            if not create:
                return None, "no account of that name, and dashboard.oidc.auto_create is off"
            now = self.clock.now()
            user = User(
                name=name,
                role=role,
                password_hash="",
                sso=True,
                created_at=now,
                created_by=by,
                changed_at=now,
                changed_by=by,
            )
            if not await self.redis.hsetnx(self.key, name, user.model_dump_json()):
                return None, "the account was being made by another sign-in: sign in again"
            return user, ""
        if user.disabled:
            return None, "the user is disabled"
        if user.role == role and user.sso:
            return user, ""
        changed = await self._save(user, by, role=role, sso=True, password_hash="")
        if user.role != role:
            await self.sessions.end_all(user.name)
        return changed, ""

    async def _keep_an_admin(self, name: str, what: str) -> None:
        others = [u for u in await self.list() if u.role == "admin" and not u.disabled and u.name != name]
        if not others:
            raise UserProblem(f"{name} is the last enabled admin and cannot {what}: make another admin first")

    async def _save(self, user: User, by: str, **changes: Any) -> User:
        changed = user.model_copy(update={**changes, "changed_at": self.clock.now(), "changed_by": by})
        await self.redis.hset(self.key, user.name, changed.model_dump_json())
        return changed


# --- sessions --------------------------------------------------------------------------------------------


def _session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    """A signed-in session (the cookie itself is not kept)."""

    key: str
    user: str
    csrf_token: str
    started_at: datetime
    seen_at: datetime

    def csrf_matches(self, given: str) -> bool:
        """Constant-time comparison with the session's CSRF token."""
        return bool(given) and hmac.compare_digest(given.encode(), self.csrf_token.encode())


class SessionStore:
    """Sessions in Redis, with their idle and absolute limits."""

    def __init__(
        self, redis: aioredis.Redis, prefix: str, *, idle_s: float = 1800.0, max_s: float = 43200.0
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.idle_s = idle_s
        self.max_s = max_s

    def _key(self, session_hash: str) -> str:
        return keys.SESSION.key(self.prefix, session_hash)

    def _user_key(self, user: str) -> str:
        return keys.USER_SESSIONS.key(self.prefix, user)

    async def create(self, user: str, now: datetime) -> tuple[str, Session]:
        """A new session of ``user``: returns the cookie's value (only the caller ever has it) and the
        session."""
        session_id = secrets.token_urlsafe(32)
        session = Session(
            key=_session_hash(session_id),
            user=user,
            csrf_token=secrets.token_urlsafe(32),
            started_at=now,
            seen_at=now,
        )
        await self._forget_ended(user)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(
                self._key(session.key),
                mapping={
                    "user": user,
                    "csrf": session.csrf_token,
                    "started": now.timestamp(),
                    "seen": now.timestamp(),
                },
            )
            pipe.expire(self._key(session.key), self._ttl(session, now))
            pipe.sadd(self._user_key(user), session.key)
            pipe.expire(self._user_key(user), int(self.max_s) + 60)
            await pipe.execute()
        return session_id, session

    async def get(self, session_id: str, now: datetime, *, touch: bool = True) -> Session | None:
        """The live session of the cookie ``session_id``, None when there is none or it ended (idle
        too long or past its absolute limit: then it is deleted). ``touch``: the request counts as the
        user's activity (background refreshes of a page do not)."""
        if not session_id or len(session_id) > 128:
            return None
        key = _session_hash(session_id)
        raw = cast(dict[str, str], await self.redis.hgetall(self._key(key)))
        if not raw or not raw.get("user") or not raw.get("csrf"):
            return None
        try:
            started = datetime.fromtimestamp(float(raw["started"]), now.tzinfo)
            seen = datetime.fromtimestamp(float(raw["seen"]), now.tzinfo)
        except (KeyError, ValueError):
            return None
        session = Session(key=key, user=raw["user"], csrf_token=raw["csrf"], started_at=started, seen_at=seen)
        if now - seen > timedelta(seconds=self.idle_s) or now - started > timedelta(seconds=self.max_s):
            await self._delete(session)
            return None
        if touch:
            session = Session(key, session.user, session.csrf_token, started, now)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(self._key(key), "seen", now.timestamp())
                pipe.expire(self._key(key), self._ttl(session, now))
                await pipe.execute()
        return session

    async def end(self, session_id: str) -> str | None:
        """End the cookie's session; returns its user (None: there was none)."""
        key = _session_hash(session_id)
        user = cast(str | None, await self.redis.hget(self._key(key), "user"))
        if user is None:
            return None
        await self.redis.delete(self._key(key))
        await self.redis.srem(self._user_key(user), key)
        return user

    async def end_all(self, user: str) -> int:
        """End every session of ``user``; returns how many were live."""
        members = cast(set[str], await self.redis.smembers(self._user_key(user)))
        ended = 0
        for key in members:
            ended += int(await self.redis.delete(self._key(key)))
        await self.redis.delete(self._user_key(user))
        return ended

    async def _delete(self, session: Session) -> None:
        await self.redis.delete(self._key(session.key))
        await self.redis.srem(self._user_key(session.user), session.key)

    async def _forget_ended(self, user: str) -> None:
        """Drop the index entries of sessions Redis has expired."""
        members = cast(set[str], await self.redis.smembers(self._user_key(user)))
        gone = [key for key in members if not await self.redis.exists(self._key(key))]
        if gone:
            await self.redis.srem(self._user_key(user), *gone)

    def _ttl(self, session: Session, now: datetime) -> int:
        """Redis forgets the session once it cannot be live any more (the dashboard's clock decides
        before that; the TTL only cleans up)."""
        left = self.max_s - (now - session.started_at).total_seconds()
        return max(1, int(min(self.idle_s, left)) + 1)


# --- failed sign-ins ---------------------------------------------------------------------------------------


class SignInThrottle:
    """Failed sign-ins per user name: ``max_failures`` in a row lock the name for ``lock_s``."""

    def __init__(self, redis: aioredis.Redis, prefix: str, *, max_failures: int, lock_s: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.max_failures = max_failures
        self.lock_s = lock_s

    def _key(self, name: str) -> str:
        return keys.SIGN_IN_FAILURES.key(self.prefix, name)

    async def locked_until(self, name: str, now: datetime) -> datetime | None:
        raw = cast(str | None, await self.redis.hget(self._key(name), "locked_until"))
        if raw is None:
            return None
        until = datetime.fromtimestamp(float(raw), now.tzinfo)
        return until if until > now else None

    async def failed(self, name: str, now: datetime) -> datetime | None:
        """Count a failure; returns when the lock it started ends (None: not locked by it)."""
        key = self._key(name)
        count = int(await self.redis.hincrby(key, "count", 1))
        if count == 1:
            # Failures count "in a row" within one lock length of the first.
            await self.redis.expire(key, int(self.lock_s) + 1)
        if count < self.max_failures:
            return None
        until = now + timedelta(seconds=self.lock_s)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"count": 0, "locked_until": until.timestamp()})
            pipe.expire(key, int(self.lock_s) + 1)
            await pipe.execute()
        return until

    async def succeeded(self, name: str) -> None:
        await self.redis.delete(self._key(name))
