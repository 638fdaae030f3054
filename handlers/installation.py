"""Installations: remember where the GitHub App is installed, and on which repositories."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.context import Context
from bot.router import Router
from bot.store.base import InstallationState

router = Router()


def _account(payload: Mapping[str, Any]) -> tuple[int, str, str | None, str | None]:
    installation = payload.get("installation") or {}
    account = installation.get("account") or {}
    return (
        int(installation["id"]),
        str(account.get("login") or ""),
        account.get("type"),
        installation.get("repository_selection"),
    )


def _names(repositories: Any) -> list[str]:
    return [
        r["full_name"] for r in repositories or [] if isinstance(r, dict) and r.get("full_name")
    ]


@router.register("installation", action="created")
@router.register("installation", action="unsuspend")
async def installed(ctx: Context) -> None:
    payload = ctx.event.payload
    installation_id, account, account_type, selection = _account(payload)
    repos = _names(payload.get("repositories")) if "repositories" in payload else None
    await ctx.store.upsert_installation(
        ctx.event.platform,
        installation_id,
        account=account,
        account_type=account_type,
        state="active",
        repository_selection=selection,
        repositories=repos,
    )
    if repos:  # the reconcile sweep looks at them (bot/recovery/)
        await ctx.store.note_repositories(
            ctx.event.platform, repos, installation_id=installation_id
        )
    ctx.log.info("installation active", installation_id=installation_id, account=account)


@router.register("installation", action="deleted")
@router.register("installation", action="suspend")
async def uninstalled(ctx: Context) -> None:
    payload = ctx.event.payload
    installation_id, account, account_type, selection = _account(payload)
    state: InstallationState = "deleted" if ctx.event.action == "deleted" else "suspended"
    known = await ctx.store.set_installation_state(ctx.event.platform, installation_id, state)
    if not known:
        await ctx.store.upsert_installation(
            ctx.event.platform,
            installation_id,
            account=account,
            account_type=account_type,
            state=state,
            repository_selection=selection,
        )
    ctx.log.info(f"installation {state}", installation_id=installation_id, account=account)


@router.register("installation_repositories", action="added")
@router.register("installation_repositories", action="removed")
async def repositories_changed(ctx: Context) -> None:
    payload = ctx.event.payload
    installation_id, account, account_type, selection = _account(payload)
    platform = ctx.event.platform
    if await ctx.store.get_installation(platform, installation_id) is None:
        await ctx.store.upsert_installation(
            platform,
            installation_id,
            account=account,
            account_type=account_type,
            repository_selection=selection,
        )
    added = _names(payload.get("repositories_added"))
    removed = _names(payload.get("repositories_removed"))
    await ctx.store.add_repositories(platform, installation_id, added)
    await ctx.store.remove_repositories(platform, installation_id, removed)
    await ctx.store.note_repositories(platform, added, installation_id=installation_id)
    for repo in removed:
        await ctx.store.forget_repository(platform, repo)
    ctx.log.info(
        "installation repositories changed",
        installation_id=installation_id,
        added=len(added),
        removed=len(removed),
    )
