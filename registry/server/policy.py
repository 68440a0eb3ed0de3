"""Storage policies: per-namespace quotas and immutable tags (retention is
gc's, see gc.py). Each check runs as a guard inside the metadata transaction
that would break it, holding a lock on what it checks (the namespace's
quota, the repository's tags), so two pushes racing for the last bytes of a
quota cannot both get in, and a refused request changes nothing.

A namespace is a repository name's first component (`team` of `team/app`);
its usage is the bytes of the unique blobs and manifests linked into its
repositories, counted once however many of them link a blob.
"""
from __future__ import annotations

from typing import Iterable

from ..errors import APIError
from .config import ImmutableRule, ServerConfig, namespace_of
from .globs import matches
from .meta import Guard, Tx


class Policies:
    def __init__(self, config: ServerConfig):
        self.quotas = dict(config.quotas)
        self.immutable = list(config.immutable)

    # -- quotas ----------------------------------------------------------------------------
    def quota_guard(self, repo: str, digest: str, size: int) -> Guard | None:
        """A guard refusing to link `digest` (of `size` bytes) into `repo` past its namespace's quota."""
        ns = namespace_of(repo)
        quota = self.quotas.get(ns)
        if quota is None:
            return None

        def guard(tx: Tx) -> None:
            tx.lock(f"quota:{ns}")
            if tx.in_namespace(ns, digest):
                return  # already counted: linking it again costs nothing
            used = tx.namespace_usage(ns)
            if used + size > quota:
                raise APIError("DENIED", f"quota exceeded: namespace {ns!r} uses {used} of its {quota} bytes; "
                                         f"{digest} needs {size} more",
                               {"namespace": ns, "quota": quota, "used": used, "needed": size})
        return guard

    # -- immutable tags ------------------------------------------------------------------------
    def immutable_rule(self, repo: str, tag: str) -> ImmutableRule | None:
        for rule in self.immutable:
            if matches(rule.repository, repo) and matches(rule.tags, tag):
                return rule
        return None

    def _refuse(self, repo: str, tag: str, rule: ImmutableRule, what: str) -> APIError:
        return APIError("DENIED", f"tag {repo}:{tag} is immutable (rule repository={rule.repository!r} "
                                  f"tags={rule.tags!r}): it cannot be {what}",
                        {"repository": repo, "tag": tag, "rule": {"repository": rule.repository, "tags": rule.tags}})

    def check_tag_delete(self, repo: str, tag: str) -> None:
        rule = self.immutable_rule(repo, tag)
        if rule is not None:
            raise self._refuse(repo, tag, rule, "deleted")

    def manifest_guard(self, repo: str, digest: str, size: int, tags: Iterable[str]) -> Guard | None:
        """A guard for a manifest PUT: no immutable tag moved to another manifest, the quota kept."""
        quota = self.quota_guard(repo, digest, size)
        fixed = [(t, r) for t in tags if (r := self.immutable_rule(repo, t)) is not None]
        if quota is None and not fixed:
            return None

        def guard(tx: Tx) -> None:
            if fixed:
                tx.lock(f"tags:{repo}")
            for tag, rule in fixed:
                current = tx.tag_digest(repo, tag)
                if current is not None and current != digest:
                    raise self._refuse(repo, tag, rule, "overwritten")
            if quota is not None:
                quota(tx)
        return guard

    def delete_manifest_guard(self, repo: str, digest: str) -> Guard | None:
        """A guard for deleting a manifest by digest: none of its tags may be immutable."""
        if not self.immutable:
            return None

        def guard(tx: Tx) -> None:
            tx.lock(f"tags:{repo}")
            for tag in tx.tags_of(repo, digest):
                rule = self.immutable_rule(repo, tag)
                if rule is not None:
                    raise self._refuse(repo, tag, rule, "deleted (through its manifest)")
        return guard
