"""Loading `.arbiter.yml` over the fake GitHub (real HTTP): where it is read from, the operator's
defaults and limits, the cache, and the one comment that reports a bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.context import Context
from bot.events import Event, Sender
from bot.metrics import Metrics
from bot.repo_config import RepoConfigs
from bot.review.config_problems import CONFIG_COMMENT_KEY, report_config, report_problems
from bot.router import Router
from config.repo import PROFILES, EffectiveConfig, defaults
from config.settings import Settings
from platforms.base import Platform
from platforms.github import comment_marker
from tests.fakes.github import FakeGitHub, PullFile
from tests.repo_config.bad_files import BAD_FILES, BadFile, bad_file_params
from tests.repo_config.conftest import REPO, MakePlatform, MakeSettings

HEAD_SHA = "a" * 40
CONTENTS = f"/repos/{REPO}/contents/*"


def seed_pull(fake: FakeGitHub, number: int = 1, *, head_config: str | None = None) -> None:
    """A pull request from `feature`; with `head_config`, it changes `.arbiter.yml` too."""
    files = [PullFile.added("src/app.py", "print('hi')\n")]
    if head_config is not None:
        files.append(PullFile.added(".arbiter.yml", head_config))
        fake.add_file(REPO, ".arbiter.yml", head_config, ref="feature")
        fake.add_file(REPO, ".arbiter.yml", head_config, ref=HEAD_SHA)
    fake.add_pull(REPO, number, files=files, head_sha=HEAD_SHA, head_ref="feature")


def pr_event(number: int = 1) -> Event:
    return Event(
        platform="github",
        name="pull_request",
        action="opened",
        delivery_id=f"delivery-{number}",
        repo=REPO,
        number=number,
        installation_id=7,
        sender=Sender("octocat"),
    )


def context(settings: Settings, platform: Platform, **fields: object) -> Context:
    return Context(
        event=pr_event(),
        settings=settings,
        store=None,  # type: ignore[arg-type]  # reading the config never touches the store
        metrics=Metrics(),
        platform_factory=lambda _event: platform,
        **fields,  # type: ignore[arg-type]
    )


def comments_marked(fake: FakeGitHub, number: int = 1) -> list[str]:
    marker = comment_marker(CONFIG_COMMENT_KEY)
    return [c["body"] for c in fake.issue_comments(REPO, number) if marker in c["body"]]


# --- Acceptance 1: where it comes from ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["app", "token"])
async def test_the_config_is_read_from_the_default_branch_not_the_pr_head(
    fake: FakeGitHub, make_settings: MakeSettings, make_platform: MakePlatform, mode: str
) -> None:
    fake.add_file(REPO, ".arbiter.yml", "profile: quiet\npath_filters: ['!docs/**']\n")
    seed_pull(fake, head_config="profile: thorough\nenabled: false\npath_filters: []\n")
    settings = make_settings(mode)

    effective = await context(settings, make_platform(settings)).repo_config()

    assert effective.problems == ()
    assert (effective.config.enabled, effective.config.profile) == (True, "quiet")
    assert effective.config.path_filters == ["!docs/**"]
    assert (effective.min_severity, effective.max_comments) == PROFILES["quiet"]
    main_head = fake.branch_head(REPO, "main")
    assert (effective.file, effective.branch, effective.commit) == (
        ".arbiter.yml",
        "main",
        main_head,
    )
    refs = [r.query.get("ref") for r in fake.requests_to("GET", CONTENTS)]
    assert refs == [main_head]  # the default branch's head commit; never the PR's head


async def test_a_default_branch_by_another_name(
    fake: FakeGitHub, settings: Settings, make_platform: MakePlatform
) -> None:
    fake.add_repo("octo/trunky", installation_id=7, default_branch="trunk")
    fake.add_file("octo/trunky", ".arbiter.yml", "language: de\n", ref="trunk")
    fake.add_file("octo/trunky", ".arbiter.yml", "language: fr\n", ref="main")

    effective = await RepoConfigs(settings).load(make_platform(settings, "octo/trunky"))

    assert (effective.config.language, effective.branch) == ("de", "trunk")


async def test_arbiter_yaml_is_read_when_there_is_no_arbiter_yml(
    fake: FakeGitHub, settings: Settings, platform: Platform
) -> None:
    fake.add_file(REPO, ".arbiter.yaml", "profile: thorough\n")

    effective = await RepoConfigs(settings).load(platform)

    assert (effective.file, effective.config.profile) == (".arbiter.yaml", "thorough")


async def test_arbiter_yml_wins_over_arbiter_yaml(
    fake: FakeGitHub, settings: Settings, platform: Platform
) -> None:
    fake.add_file(REPO, ".arbiter.yaml", "profile: thorough\n")
    fake.add_file(REPO, ".arbiter.yml", "profile: quiet\n")

    effective = await RepoConfigs(settings).load(platform)

    assert (effective.file, effective.config.profile) == (".arbiter.yml", "quiet")


async def test_a_repository_without_a_file_gets_the_defaults_and_no_problems(
    fake: FakeGitHub, settings: Settings, platform: Platform
) -> None:
    effective = await RepoConfigs(settings).load(platform)

    assert effective.file is None and effective.problems == ()
    assert effective.config == defaults().config


# --- Acceptance 1: the operator's defaults and limits ------------------------------------------


async def test_operator_defaults_apply_under_repo_values(
    fake: FakeGitHub, make_settings: MakeSettings, make_platform: MakePlatform, tmp_path: Path
) -> None:
    house = tmp_path / "house.yml"
    house.write_text(
        "profile: quiet\nlanguage: fr\npath_filters: ['!**/*.snap']\n"
        "review:\n  min_confidence: 0.8\n  fail_on: critical\n"
    )
    fake.add_file(REPO, ".arbiter.yml", "language: de\nreview:\n  fail_on: major\n")
    settings = make_settings(repo_config_defaults=house)

    effective = await RepoConfigs(settings).load(make_platform(settings))

    c = effective.config
    assert effective.problems == ()
    assert (c.language, c.review.fail_on) == ("de", "major")  # the repository's values win
    assert (c.path_filters, c.review.min_confidence) == (["!**/*.snap"], 0.8)  # the house's stay
    assert (effective.min_severity, effective.max_comments) == PROFILES["quiet"]
    assert str(effective.sources["language"]) == ".arbiter.yml"
    assert str(effective.sources["review.min_confidence"]) == f"operator defaults ({house})"


async def test_a_repo_cannot_raise_the_cost_cap_or_pick_a_model_the_operator_did_not_allow(
    fake: FakeGitHub, make_settings: MakeSettings, make_platform: MakePlatform
) -> None:
    fake.add_file(
        REPO,
        ".arbiter.yml",
        "profile: thorough\nmodel: claude-opus-5\nbudget:\n  max_cost_per_review_usd: 25\n",
    )
    seed_pull(fake)
    settings = make_settings(
        max_cost_per_review_usd=0.40,
        allowed_models='["gpt-4o-mini", "claude-sonnet-4-6"]',
        default_model="gpt-4o",
    )
    platform = make_platform(settings)

    effective = await RepoConfigs(settings).load(platform)

    assert (effective.model, effective.max_cost_per_review_usd) == ("gpt-4o", 0.40)
    assert effective.config.profile == "thorough"  # the rest of the file applies
    assert [p.key for p in effective.problems] == ["model", "budget.max_cost_per_review_usd"]
    await report_problems(platform, await platform.pull_request(1), effective)
    [body] = comments_marked(fake)
    assert "asks for settings this Arbiter does not allow (2 problems)" in body
    assert '"claude-opus-5" is not a model this Arbiter may use' in body
    assert "25 is above the operator's cap of $0.40 per review" in body


async def test_a_repo_may_lower_the_cap_and_pick_an_allowed_model(
    fake: FakeGitHub, make_settings: MakeSettings, make_platform: MakePlatform
) -> None:
    fake.add_file(
        REPO, ".arbiter.yml", "model: gpt-4o-mini\nbudget:\n  max_cost_per_review_usd: 0.05\n"
    )
    settings = make_settings(allowed_models="gpt-4o-mini, claude-sonnet-4-6")

    effective = await RepoConfigs(settings).load(make_platform(settings))

    assert effective.problems == ()
    assert (effective.model, effective.max_cost_per_review_usd) == ("gpt-4o-mini", 0.05)


async def test_an_unreadable_operator_defaults_file_is_a_logged_problem_not_a_crash(
    fake: FakeGitHub, make_settings: MakeSettings, make_platform: MakePlatform, tmp_path: Path
) -> None:
    fake.add_file(REPO, ".arbiter.yml", "profile: quiet\n")
    seed_pull(fake)
    missing = tmp_path / "nope.yml"
    settings = make_settings(repo_config_defaults=missing)
    platform = make_platform(settings)

    effective = await RepoConfigs(settings).load(platform)

    [problem] = effective.problems
    assert (problem.layer, problem.file) == ("operator", str(missing))
    assert "ARBITER_REPO_CONFIG_DEFAULTS names this file, but it cannot be read" in problem.message
    assert effective.config.profile == "quiet"
    assert await report_problems(platform, await platform.pull_request(1), effective) is None
    assert fake.issue_comments(REPO, 1) == []  # the operator's problem is not the PR's


# --- The cache ------------------------------------------------------------------------------------


async def test_cached_per_repository_and_default_branch_commit(
    fake: FakeGitHub, settings: Settings, make_platform: MakePlatform
) -> None:
    fake.add_file(REPO, ".arbiter.yml", "profile: quiet\n")
    fake.add_repo("octo/other", installation_id=7)
    fake.add_file("octo/other", ".arbiter.yml", "profile: thorough\n")
    configs = RepoConfigs(settings)

    first = await configs.load(make_platform(settings))
    again = await configs.load(make_platform(settings))  # another event, same commit
    other = await configs.load(make_platform(settings, "octo/other"))

    assert again is first
    assert other.config.profile == "thorough"
    assert len(fake.requests_to("GET", CONTENTS)) == 1
    assert len(fake.requests_to("GET", "/repos/octo/other/contents/*")) == 1

    fake.add_file(REPO, ".arbiter.yml", "profile: balanced\n")  # a new commit on main
    changed = await configs.load(make_platform(settings))

    assert changed.config.profile == "balanced"
    assert changed.commit == fake.branch_head(REPO, "main") != first.commit
    assert len(fake.requests_to("GET", CONTENTS)) == 2


async def test_a_context_loads_once_per_event_and_shares_the_runtime_cache(
    fake: FakeGitHub, settings: Settings, platform: Platform
) -> None:
    fake.add_file(REPO, ".arbiter.yml", "profile: quiet\n")
    ctx = context(settings, platform)

    first = await ctx.repo_config()
    assert await ctx.repo_config() is first
    shared = RepoConfigs(settings)  # the runtime's, handed to every context
    second = await context(settings, platform, repo_configs=shared).repo_config()
    assert await context(settings, platform, repo_configs=shared).repo_config() is second
    assert len(fake.requests_to("GET", CONTENTS)) == 2  # one per RepoConfigs, not per context
    assert second is not first  # no hidden process-wide cache: each RepoConfigs is its own


# --- Acceptance 2 over the platform: a handler with a bad file ---------------------------------


@pytest.mark.parametrize("case", bad_file_params(BAD_FILES))
async def test_a_bad_file_never_breaks_a_handler_and_is_reported_once(
    fake: FakeGitHub, settings: Settings, platform: Platform, case: BadFile
) -> None:
    fake.add_file(REPO, ".arbiter.yml", case.text)
    seed_pull(fake)
    seen: list[EffectiveConfig] = []
    router = Router()

    @router.register("pull_request", action="opened")
    async def review(ctx: Context) -> None:
        pr = await ctx.platform.pull_request(1)
        effective = await ctx.repo_config(pr)
        await report_config(ctx, pr, effective)  # its problems are reported on `pr`
        seen.append(effective)

    configs = RepoConfigs(settings)
    result = await router.dispatch(context(settings, platform, repo_configs=configs))
    # the next push
    result_again = await router.dispatch(context(settings, platform, repo_configs=configs))

    assert result.ok and result_again.ok, result.failed
    effective = seen[0]
    assert effective.config == defaults().config
    [problem] = effective.problems
    assert problem.key == case.key and problem.line == case.line
    [body] = comments_marked(fake)  # one comment, not one per push
    assert "`.arbiter.yml` on `main` cannot be used (1 problem)" in body
    assert "reviewed with the defaults until it is fixed" in body
    assert case.says[0] in body
    assert "arbiter config validate .arbiter.yml" in body


async def test_the_problems_comment_is_edited_in_place_and_cleared_when_fixed(
    fake: FakeGitHub, settings: Settings, platform: Platform
) -> None:
    seed_pull(fake, 1)
    seed_pull(fake, 2)
    configs = RepoConfigs(settings)
    pr = await platform.pull_request(1)

    fake.add_file(REPO, ".arbiter.yml", "review:\n  max_comments: ten\n")
    await report_problems(platform, pr, await configs.load(platform))
    [first] = fake.issue_comments(REPO, 1)
    assert "review.max_comments" in first["body"]

    fake.add_file(REPO, ".arbiter.yml", "profile: loud\n")  # still wrong, differently
    await report_problems(platform, pr, await configs.load(platform))
    [second] = fake.issue_comments(REPO, 1)
    assert second["id"] == first["id"]
    assert 'profile: got the text "loud"' in second["body"]
    assert '"ten"' not in second["body"]

    fake.add_file(REPO, ".arbiter.yml", "profile: quiet\n")  # fixed
    fixed = await configs.load(platform)
    ref = await report_problems(platform, pr, fixed)
    [third] = fake.issue_comments(REPO, 1)
    assert ref is not None and ref.id == third["id"] == first["id"]
    assert (
        "The problems reported here are fixed: `.arbiter.yml` is used as written."
        in (third["body"])
    )

    # A pull request that never had a problem gets no comment at all.
    assert await report_problems(platform, await platform.pull_request(2), fixed) is None
    assert fake.issue_comments(REPO, 2) == []
    assert fake.requests_to("POST", f"/repos/{REPO}/issues/2/comments") == []


async def test_mentions_in_a_bad_file_do_not_ping_anyone(
    fake: FakeGitHub, settings: Settings, platform: Platform
) -> None:
    fake.add_file(REPO, ".arbiter.yml", "language: '@octo-org/everyone please look'\n")
    seed_pull(fake)

    effective = await RepoConfigs(settings).load(platform)
    await report_problems(platform, await platform.pull_request(1), effective)

    [body] = comments_marked(fake)
    assert "@octo-org" not in body
    assert "@\u200bocto-org/everyone" in body


async def test_no_comment_in_a_dry_run_and_a_failed_comment_does_not_stop_the_review(
    fake: FakeGitHub, make_settings: MakeSettings, make_platform: MakePlatform
) -> None:
    fake.add_file(REPO, ".arbiter.yml", "profile: loud\n")
    seed_pull(fake)
    dry = make_settings(post_comments=False)
    platform = make_platform(dry)
    pr = await platform.pull_request(1)

    ctx = context(dry, platform)
    effective = await ctx.repo_config(pr)
    await report_config(ctx, pr, effective)

    assert [p.key for p in effective.problems] == ["profile"]
    assert fake.issue_comments(REPO, 1) == []

    settings = make_settings()
    platform = make_platform(settings)
    fake.fail("POST", f"/repos/{REPO}/issues/1/comments", 422, times=10)

    ctx = context(settings, platform)
    effective = await ctx.repo_config(pr)
    await report_config(ctx, pr, effective)  # fails, logged: the review goes on

    assert [p.key for p in effective.problems] == ["profile"]
    assert fake.issue_comments(REPO, 1) == []
    assert fake.requests_to("POST", f"/repos/{REPO}/issues/1/comments")  # it was tried
