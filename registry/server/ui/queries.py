"""What the UI's pages read from the registry's metadata: one page at a time.

Every function here runs in a worker thread (Registry.run). Listings are
filtered to what the viewer may pull by the metadata store itself, so
sorting, counting and LIMIT/OFFSET happen in the query, whatever the
registry's size.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..meta import RegistryMeta, RepoRow, TagRow, UploadRow, Visible
from ..metadb.sql import REPO_SORTS, TAG_SORTS

__all__ = ["PAGE", "REPO_SORTS", "TAG_SORTS", "Page", "RepoRow", "TagRow", "Visible", "repositories", "repository",
           "tags", "uploads"]
PAGE = 50


@dataclass(frozen=True)
class Page:
    number: int  # from 1
    size: int
    total: int  # matching rows

    @property
    def count(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


def _page_of(total: int, number: int, size: int) -> Page:
    page = Page(max(1, number), size, total)
    return page if page.number <= page.count else Page(page.count, size, total)


def repositories(meta: RegistryMeta, visible: Visible, needle: str, sort: str, descending: bool, number: int,
                 size: int = PAGE) -> tuple[list[RepoRow], Page]:
    """One page of the repositories the viewer may pull whose name contains `needle`."""
    pages: list[Page] = []

    def page(total: int) -> tuple[int, int]:
        pages.append(_page_of(total, number, size))
        return pages[0].size, pages[0].offset
    rows, _ = meta.repository_page(visible, needle, sort, descending, page)
    return rows, pages[0]


def repository(meta: RegistryMeta, name: str) -> RepoRow | None:
    """The figures of one repository (None: there is no such repository)."""
    return meta.repository_figures(name)


def tags(meta: RegistryMeta, repo: str, needle: str, sort: str, descending: bool, number: int,
         size: int = PAGE) -> tuple[list[TagRow], Page]:
    """One page of a repository's tags with the manifest each names."""
    pages: list[Page] = []

    def page(total: int) -> tuple[int, int]:
        pages.append(_page_of(total, number, size))
        return pages[0].size, pages[0].offset
    rows, _ = meta.tag_page(repo, needle, sort, descending, page)
    return rows, pages[0]


def uploads(meta: RegistryMeta, visible: Visible, limit: int = 200) -> list[UploadRow]:
    """Upload sessions not finished yet, newest activity first."""
    return [u for u in meta.recent_uploads(limit) if visible is None or visible(u.repo)]
