"""API keys: random secrets shown once, stored as SHA-256 hashes, compared in constant time.

A key belongs to a ``project`` (``default`` unless named; made when first named) and carries
``groups`` (access-control groups inside the project: a file or document restricted to groups
is read only by keys sharing one of them), an ``admin`` flag (reads everything in its project,
manages its keys, deletes its models) and an ``owner`` flag (an admin of every project). The
rules: ``afinar.store.access``."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable

from sqlalchemy import func, select, update

from afinar.errors import Conflict, InvalidRequest, NotFound
from afinar.ids import new_id
from afinar.settings import Settings, get_settings
from afinar.store.db import get_database
from afinar.store.tables import ApiKey, Project

PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")
PREFIX = "sk-afinar-"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_groups(value: str | Iterable[str] | None, param: str = "groups") -> list[str]:
    """Group names from ``"a,b"`` or a list: stripped, empty items dropped, sorted, unique;
    each is 1-64 letters, digits or ``_ . : @ -`` (no commas or spaces)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    out = set()
    for g in items:
        if not isinstance(g, str):
            raise InvalidRequest(f"{param}: group names are strings, not {g!r}", param=param)
        g = g.strip()
        if not g:
            continue
        if not GROUP.match(g):
            raise InvalidRequest(f"{param}: invalid group name {g!r} (1-64 letters, digits or "
                                 "_ . : @ -, starting with a letter or digit)", param=param)
        out.add(g)
    return sorted(out)


def check_project(name: str) -> str:
    if not isinstance(name, str) or not PROJECT.match(name):
        raise InvalidRequest(f"invalid project name {name!r} (1-64 lowercase letters, digits, "
                             "_ or -, starting with a letter or digit)", param="project")
    return name


class Projects:
    """Projects: made by ``create`` or when a key first names one; ``default`` always exists."""

    def __init__(self, settings: Settings | None = None):
        self.db = get_database((settings or get_settings()).db_url)

    def create(self, name: str) -> Project:
        name = check_project(name)
        with self.db.session() as s:
            if s.get(Project, name) is not None:
                raise Conflict(f"project {name!r} exists", param="project")
            rec = Project(id=name, created_at=int(time.time()))
            s.add(rec)
        return rec

    def list(self) -> list[tuple[Project, int]]:
        """Each project with its number of keys."""
        with self.db.session() as s:
            counts = dict(s.execute(select(ApiKey.project_id, func.count())
                                    .group_by(ApiKey.project_id)).all())
            return [(p, int(counts.get(p.id, 0)))
                    for p in s.scalars(select(Project).order_by(Project.created_at, Project.id))]


class ApiKeys:
    def __init__(self, settings: Settings | None = None):
        self.db = get_database((settings or get_settings()).db_url)

    def create(self, name: str, groups: str | Iterable[str] | None = None,
               admin: bool = False, project: str | None = None,
               owner: bool = False) -> tuple[ApiKey, str]:
        """A new key (in ``project``, made if new); the secret is returned here and never
        again. An owner key is an admin too."""
        name = (name or "").strip()
        if not name or len(name) > 128 or not name.isprintable():
            raise InvalidRequest("a key's name is 1-128 printable characters", param="name")
        project = check_project(project or "default")
        secret = PREFIX + secrets.token_urlsafe(32)
        rec = ApiKey(id=new_id("key_", 16), name=name, prefix=secret[:14], sha256=_hash(secret),
                     created_at=int(time.time()), groups=parse_groups(groups),
                     admin=bool(admin or owner), project_id=project, owner=bool(owner))
        with self.db.session() as s:
            if s.get(Project, project) is None:
                s.add(Project(id=project, created_at=int(time.time())))
            s.add(rec)
        return rec, secret

    def list(self, project: str | None = None) -> list[ApiKey]:
        """All keys, or a project's."""
        q = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if project is not None:
            q = q.where(ApiKey.project_id == project)
        with self.db.session() as s:
            return list(s.scalars(q))

    def get(self, key_id: str) -> ApiKey:
        with self.db.session() as s:
            rec = s.get(ApiKey, key_id)
        if rec is None:
            raise NotFound(f"no API key {key_id!r}", param="key_id")
        return rec

    def any(self) -> bool:
        with self.db.session() as s:
            return s.scalar(select(ApiKey.id).limit(1)) is not None

    def update(self, key_id: str, groups: str | Iterable[str] | None = None,
               admin: bool | None = None) -> ApiKey:
        """Change a key's groups and/or admin flag (``None``: keep). Requests read the key's
        record each time, so the change holds from the next request on (studio sessions too).
        An owner key stays an admin."""
        with self.db.session() as s:
            rec = s.get(ApiKey, key_id)
            if rec is None:
                raise NotFound(f"no API key {key_id!r}", param="key_id")
            if groups is not None:
                rec.groups = parse_groups(groups)
            if admin is not None:
                rec.admin = bool(admin or rec.owner)
            s.flush()
            s.expunge(rec)
        return rec

    def revoke(self, key_id: str) -> None:
        with self.db.session() as s:
            rec = s.get(ApiKey, key_id)
            if rec is None:
                raise NotFound(f"no API key {key_id!r}", param="key_id")
            s.delete(rec)

    def verify(self, secret: str) -> ApiKey | None:
        digest = _hash(secret)
        with self.db.session() as s:
            rec = s.scalar(select(ApiKey).where(ApiKey.sha256 == digest))
            if rec is None or not hmac.compare_digest(rec.sha256, digest):
                return None
            now = int(time.time())
            if (rec.last_used_at or 0) < now:  # one write per key per second at most
                s.execute(update(ApiKey).where(ApiKey.id == rec.id).values(last_used_at=now))
            return rec
