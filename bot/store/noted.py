"""Repositories a store noted lately, as both stores treat them: noted again only once in a
while. An event's dispatch notes its repository each time (for the reconcile sweep,
bot/recovery/), and a busy repository's events would otherwise write the same row over and over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cachetools import TTLCache

NOTE_AGAIN_SECONDS = 300.0  # a repository's `last_seen_at` lags by at most this
MAX_REMEMBERED = 4096


class RecentlyNoted:
    """The repositories this process noted less than `interval` seconds ago, with the
    installation they were noted under (another installation is news, noted at once)."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        interval: float = NOTE_AGAIN_SECONDS,
        max_entries: int = MAX_REMEMBERED,
    ) -> None:
        self._noted: TTLCache[tuple[str, str], int | None] = TTLCache(
            max_entries, interval, timer=clock
        )

    def due(self, platform: str, repos: Iterable[str], installation_id: int | None) -> list[str]:
        """Of `repos`, those to write now (sorted, each once)."""
        missing = object()
        return [
            repo
            for repo in sorted(set(repos))
            if self._noted.get((platform, repo), missing) != installation_id
        ]

    def noted(self, platform: str, repos: Iterable[str], installation_id: int | None) -> None:
        for repo in repos:
            self._noted[(platform, repo)] = installation_id

    def forget(self, platform: str, repo: str) -> None:
        """The repository was forgotten (its app uninstalled): the next note writes it."""
        self._noted.pop((platform, repo), None)
