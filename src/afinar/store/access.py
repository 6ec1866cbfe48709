"""Who may read and change what: the one access rule of the server, used by every route that
reaches a file's content (file listings and content, vector-store file listings, counts and
content, search, ``file_search`` on chat and responses) and by the fine-tuning routes.

Projects. Every key belongs to one project; files, vector stores, fine-tuning jobs and their
models belong to the project of the key that made them (``default`` for what the CLI makes).
To a key, another project's objects do not exist (404). An ``owner`` key acts in every
project and is an admin everywhere.

Readers of a file. Inside a project, a file's *readers* are:

- its ``groups`` once someone restricted it (``FileRecord.groups``; an empty list: every key of
  the project), plus the key that uploaded it;
- before that, the groups the uploading key had at upload time plus that key (a key without
  groups: only itself); a file made without a key (the CLI, a job): admins only.

Admins of the project read everything in it. A document of a vector store made from a file has
exactly its file's readers, in every store it is added to (``KbDocument.groups`` holds them as
principals: group names, ``@<key id>`` for the uploading key, ``@admins`` for nobody but admins;
those two can never be group names, which start with a letter or digit). The ``groups``
attribute of a vector-store file changes the *file's* groups, everywhere at once; only the
file's uploader or an admin may do that, and a non-admin only to groups it holds. Giving the
groups a file already has is no change and allowed to any reader; leaving ``groups`` out never
changes them. So a re-add or an attribute update never widens (or moves) who may read a file.

Stores and jobs. A vector store is visible to every key of its project (its file counts and
sizes cover only the documents the key may read); only the key that created it, or an admin,
may rename or delete it. A fine-tuning job is visible to the key that created it, keys sharing
one of that key's groups and admins; only its creator or an admin may cancel, pause or resume
it. Others get 404 (not visible) or 403 (visible, not theirs to change).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update

from afinar.errors import AfinarError
from afinar.store.tables import AliasRecord, FileRecord, JobRecord, KbDocument, KbRecord, \
    ModelRecord

DEFAULT_PROJECT = "default"
ADMINS = "@admins"  # a principal no key holds: admins only


class Forbidden(AfinarError):
    code = "permission_denied"
    http_status = 403


def key_principal(key_id: str) -> str:
    return "@" + key_id


@dataclass(frozen=True)
class Caller:
    """Who sends a request: an API key (id, name, project, groups, admin and owner flags), or
    the local development mode (no keys exist; the server is bound to loopback), which acts as
    an owner."""

    key_id: str | None
    name: str
    groups: frozenset[str] = frozenset()
    admin: bool = False
    project: str = DEFAULT_PROJECT
    owner: bool = False

    @property
    def principals(self) -> frozenset[str]:
        """The group names and the key's own principal (``@<key id>``)."""
        own = {key_principal(self.key_id)} if self.key_id else set()
        return frozenset(self.groups) | own

    @property
    def search_groups(self) -> list[str] | None:
        """``KnowledgeBases.search``'s ``groups``: ``None`` (unrestricted) for admins."""
        return None if self.admin else sorted(self.principals)

    def in_project(self, project_id: str | None) -> bool:
        return self.owner or (project_id or DEFAULT_PROJECT) == self.project

    def may_read(self, readers: Iterable[str] | None) -> bool:
        """A document whose readers are ``readers`` (empty: every key of the project)."""
        readers = list(readers or [])
        return self.admin or not readers or bool(self.principals.intersection(readers))

    def may_read_file(self, rec: FileRecord) -> bool:
        return self.in_project(rec.project_id) and self.may_read(file_readers(rec))

    def owns(self, owner_key_id: str | None) -> bool:
        """The key that made an object, or an admin."""
        return self.admin or (self.key_id is not None and owner_key_id == self.key_id)

    def require_admin(self, what: str) -> None:
        if not self.admin:
            raise Forbidden(f"only an admin key may {what}; this key ({self.name}) is not an "
                            "admin (create one with `afinar keys create --name NAME --admin`)")

    def require_owner(self, owner_key_id: str | None, what: str) -> None:
        if not self.owns(owner_key_id):
            raise Forbidden(f"only the key that created it or an admin may {what}; this key "
                            f"({self.name}) did not create it")


def file_readers(rec: FileRecord) -> list[str]:
    """The principals that may read a file (empty: every key of its project); admins always
    may."""
    own = [key_principal(rec.owner_key_id)] if rec.owner_key_id else []
    if rec.groups is not None:
        return sorted(set(rec.groups) | set(own)) if rec.groups else []
    if rec.owner_key_id:
        return sorted(set(rec.owner_groups or []) | set(own))
    return [ADMINS]


def check_groups_change(who: Caller, rec: FileRecord, groups: list[str]) -> bool:
    """Whether setting ``groups`` on file ``rec`` changes anything; raise ``Forbidden`` when
    the caller may not make that change (not the uploader nor an admin, or naming a group it
    does not hold)."""
    if rec.groups is not None and sorted(rec.groups) == sorted(groups):
        return False
    if not who.admin and (outside := sorted(set(groups) - who.groups)):
        raise Forbidden(f"this key is not in group {outside[0]!r}: a key may only restrict "
                        "documents to its own groups (or an admin key to any)")
    if not who.owns(rec.owner_key_id):
        raise Forbidden(f"only the key that uploaded {rec.id} or an admin may change who may "
                        "read it (its groups)", param="attributes.groups")
    return True


def set_file_groups(db, file_id: str, groups: list[str]) -> list[str]:
    """Restrict a file to ``groups`` (empty: the whole project) in one transaction: the file
    record, every document made from it in any store (their ``groups`` attribute too, so
    filters see the same), and the stores' bookkeeping. Returns the new readers."""
    groups = sorted(set(groups))
    with db.session() as s:
        rec = s.get(FileRecord, file_id)
        rec.groups = groups
        readers = file_readers(rec)
        docs = list(s.scalars(select(KbDocument).where(KbDocument.source == file_id)))
        for d in docs:
            d.groups = readers
            d.attributes = {**(d.attributes or {}), "groups": ",".join(groups)}
        for kb_id in {d.kb_id for d in docs}:  # index caches know by the version
            s.execute(update(KbRecord).where(KbRecord.id == kb_id).values(
                version=KbRecord.version + 1))
    return readers


def job_readers(job: JobRecord) -> list[str]:
    if job.owner_key_id:
        return sorted(set(job.owner_groups or []) | {key_principal(job.owner_key_id)})
    return [ADMINS]


def may_see_job(who: Caller, job: JobRecord) -> bool:
    return who.in_project(job.project_id) and who.may_read(job_readers(job))


def model_project(db, model_id: str) -> str | None:
    """The project of a fine-tuned model (or checkpoint): its job's; ``None`` for a model that
    no job made (built-in or registered with the CLI: every project's). An alias is its
    target's."""
    with db.session() as s:
        rec = s.get(ModelRecord, model_id)
        if rec is None and (alias := s.get(AliasRecord, model_id)) is not None:
            rec = s.get(ModelRecord, alias.model)
        job_id = (rec.info or {}).get("job") if rec is not None else None
        if not job_id:
            return None
        return s.scalar(select(JobRecord.project_id).where(JobRecord.id == job_id)) \
            or DEFAULT_PROJECT
