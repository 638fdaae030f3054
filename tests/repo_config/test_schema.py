"""config/repo.py without a platform: the schema, the layers, the operator's limits, the words."""

from __future__ import annotations

import pytest

from bot.core.filters import PathFilters
from config.repo import (
    MAX_FILE_BYTES,
    PROFILES,
    EffectiveConfig,
    Policy,
    defaults,
    glob_problem,
    leaf_keys,
    resolve,
)
from tests.repo_config.bad_files import BAD_FILES, MORE_BAD_FILES, BadFile, bad_file_params

POLICY = Policy(
    default_model="gpt-4o",
    allowed_models=frozenset({"gpt-4o-mini", "claude-sonnet-4-6"}),
    max_cost_per_review_usd=0.50,
)


def only_default_origins(effective: EffectiveConfig) -> bool:
    return all(origin.layer in ("default", "setting") for origin in effective.sources.values())


# --- No file, and a good one -------------------------------------------------------------------


def test_a_repository_without_a_file_gets_balanced_defaults() -> None:
    effective = defaults(POLICY)

    c = effective.config
    assert effective.problems == ()
    assert effective.file is None
    assert (c.enabled, c.version, c.language, c.profile) == (True, 1, "en", "balanced")
    assert (effective.min_severity, effective.max_comments) == PROFILES["balanced"]
    assert (c.review.min_confidence, c.review.summary, c.review.fail_on) == (0.5, True, "none")
    assert (c.auto_review.enabled, c.auto_review.drafts, c.auto_review.incremental) == (
        True,
        False,
        True,
    )
    assert c.path_filters == [] and c.path_instructions == [] and c.instructions == ""
    assert (c.followup.enabled, c.followup.allow) == (True, "collaborators")
    assert effective.model == "gpt-4o"
    assert effective.max_cost_per_review_usd == 0.50
    assert str(effective.sources["model"]) == "ARBITER_DEFAULT_MODEL"
    assert str(effective.sources["budget.max_cost_per_review_usd"]) == (
        "ARBITER_MAX_COST_PER_REVIEW_USD"
    )
    assert str(effective.sources["review.max_comments"]) == "built-in default (profile balanced)"
    assert set(effective.sources) == set(leaf_keys())


def test_every_key_of_a_full_file_is_applied_and_attributed() -> None:
    text = """\
version: 1
enabled: true
language: de
profile: thorough
instructions: |
  Prefer small functions.
  Flag any SQL built with string formatting.
path_filters: ["src/**", "!src/generated/**"]
path_instructions:
  - path: src/api/**
    instructions: Check that every handler authorizes the caller.
auto_review:
  enabled: true
  drafts: true
  incremental: false
  base_branches: ["release/.*"]
  ignore_authors: [renovate-bot]
  ignore_title_keywords: [WIP]
  labels: ["!no-review"]
review:
  max_comments: 12
  min_confidence: 0.8
  summary: false
  fail_on: major
model: gpt-4o-mini
budget:
  max_cost_per_review_usd: 0.2
followup:
  enabled: false
  allow: everyone
"""
    effective = resolve(text, policy=POLICY)

    c = effective.config
    assert effective.problems == ()
    assert effective.repo_file_used
    assert c.language == "de"
    assert c.instructions.startswith("Prefer small functions.\n")
    assert c.path_filters == ["src/**", "!src/generated/**"]
    assert [(p.path, p.instructions) for p in c.path_instructions] == [
        ("src/api/**", "Check that every handler authorizes the caller.")
    ]
    assert c.auto_review.base_branches == ["release/.*"]
    assert (c.auto_review.drafts, c.auto_review.incremental) == (True, False)
    # thorough sets the floor; the explicit max_comments beats the profile's 50.
    assert (effective.min_severity, effective.max_comments) == ("nit", 12)
    assert str(effective.sources["review.min_severity"]) == "profile thorough in .arbiter.yml"
    assert str(effective.sources["review.max_comments"]) == ".arbiter.yml"
    assert (c.review.min_confidence, c.review.summary, c.review.fail_on) == (0.8, False, "major")
    assert (effective.model, effective.max_cost_per_review_usd) == ("gpt-4o-mini", 0.2)
    assert (c.followup.enabled, c.followup.allow) == (False, "everyone")
    written = {k for k, origin in effective.sources.items() if origin.layer == "repo"}
    assert written == set(leaf_keys())  # min_severity through the profile


@pytest.mark.parametrize("profile", ["quiet", "balanced", "thorough"])
def test_a_profile_sets_the_floor_and_the_cap(profile: str) -> None:
    effective = resolve(f"profile: {profile}\n", policy=POLICY)

    assert (effective.min_severity, effective.max_comments) == PROFILES[profile]
    assert effective.config.review.min_severity == PROFILES[profile][0]


def test_profiles_go_from_quiet_to_thorough() -> None:
    quiet, balanced, thorough = (PROFILES[p] for p in ("quiet", "balanced", "thorough"))
    rank = ["nit", "minor", "major", "critical"]
    assert rank.index(quiet[0]) > rank.index(balanced[0]) > rank.index(thorough[0])
    assert quiet[1] < balanced[1] < thorough[1]


def test_a_key_with_no_value_counts_as_not_set() -> None:
    effective = resolve("review:\nmodel:\npath_filters:\n", policy=POLICY)

    assert effective.problems == ()
    assert effective.config == defaults(POLICY).config


# --- Layers ------------------------------------------------------------------------------------

OPERATOR = """\
profile: quiet
language: fr
path_filters: ["!**/*.snap"]
review:
  min_confidence: 0.7
model: gpt-4o-mini
budget:
  max_cost_per_review_usd: 0.3
"""


def test_operator_defaults_apply_under_repo_values() -> None:
    repo = "language: de\nreview:\n  summary: false\n"

    effective = resolve(repo, operator_text=OPERATOR, policy=POLICY, operator_file="house.yml")

    c = effective.config
    assert effective.problems == ()
    assert c.language == "de"  # the repo's value wins
    assert c.review.summary is False  # a section merges key by key...
    assert c.review.min_confidence == 0.7  # ...keeping the operator's other keys
    assert c.path_filters == ["!**/*.snap"]
    assert (effective.min_severity, effective.max_comments) == PROFILES["quiet"]
    assert (effective.model, effective.max_cost_per_review_usd) == ("gpt-4o-mini", 0.3)
    origins = {k: str(v) for k, v in effective.sources.items()}
    assert origins["language"] == ".arbiter.yml"
    assert origins["review.summary"] == ".arbiter.yml"
    assert origins["review.min_confidence"] == "operator defaults (house.yml)"
    assert origins["review.min_severity"] == "profile quiet in operator defaults (house.yml)"
    assert origins["enabled"] == "built-in default"


def test_a_list_in_the_repo_replaces_the_operators_list() -> None:
    effective = resolve('path_filters: ["src/**"]\n', operator_text=OPERATOR, policy=POLICY)

    assert effective.config.path_filters == ["src/**"]


def test_a_repo_profile_overrides_operator_values_it_derives() -> None:
    """An explicit operator value is a default too: the repository's profile is above it."""
    operator = "review:\n  max_comments: 3\n  min_severity: critical\n"

    effective = resolve("profile: thorough\n", operator_text=operator, policy=POLICY)

    assert (effective.min_severity, effective.max_comments) == PROFILES["thorough"]


def test_an_explicit_repo_value_beats_the_operators_profile() -> None:
    effective = resolve("review:\n  max_comments: 40\n", operator_text=OPERATOR, policy=POLICY)

    assert (effective.min_severity, effective.max_comments) == ("major", 40)


def test_a_bad_operator_file_falls_back_to_the_built_in_defaults() -> None:
    effective = resolve(
        "profile: thorough\n",
        operator_text="review: [\n",
        policy=POLICY,
        operator_file="/etc/arbiter/defaults.yml",
    )

    assert [(p.layer, p.file) for p in effective.problems] == [
        ("operator", "/etc/arbiter/defaults.yml")
    ]
    assert effective.repo_problems == ()
    assert effective.config.profile == "thorough"  # the repository's file still applies
    assert effective.config.language == "en"


# --- The operator's limits ----------------------------------------------------------------------


def test_a_repo_cannot_raise_the_cost_cap() -> None:
    effective = resolve("budget:\n  max_cost_per_review_usd: 5\nprofile: quiet\n", policy=POLICY)

    assert effective.max_cost_per_review_usd == 0.50
    assert str(effective.sources["budget.max_cost_per_review_usd"]) == (
        "ARBITER_MAX_COST_PER_REVIEW_USD"
    )
    [problem] = effective.problems
    assert (problem.key, problem.line) == ("budget.max_cost_per_review_usd", 2)
    assert "5 is above the operator's cap of $0.50 per review" in problem.message
    assert "ARBITER_MAX_COST_PER_REVIEW_USD" in problem.message
    assert "so $0.50 applies" in problem.message
    # Only that key is refused: the rest of a valid file is applied.
    assert effective.repo_file_used and effective.config.profile == "quiet"


def test_a_repo_cannot_raise_the_cost_cap_over_operator_defaults_either() -> None:
    effective = resolve(
        "budget:\n  max_cost_per_review_usd: 0.9\n", operator_text=OPERATOR, policy=POLICY
    )

    assert effective.max_cost_per_review_usd == 0.3
    assert "so $0.30 applies" in effective.problems[0].message


def test_a_repo_can_lower_the_cost_cap() -> None:
    effective = resolve("budget:\n  max_cost_per_review_usd: 0.05\n", policy=POLICY)

    assert effective.problems == ()
    assert effective.max_cost_per_review_usd == 0.05


def test_without_an_operator_cap_a_repo_may_set_one() -> None:
    uncapped = Policy(max_cost_per_review_usd=0)

    assert defaults(uncapped).max_cost_per_review_usd == 0  # no cap at all
    assert resolve("budget:\n  max_cost_per_review_usd: 3\n", policy=uncapped).problems == ()


def test_a_repo_cannot_choose_a_model_the_operator_did_not_allow() -> None:
    effective = resolve("model: o1-pro\nlanguage: de\n", policy=POLICY)

    assert effective.model == "gpt-4o"
    assert str(effective.sources["model"]) == "ARBITER_DEFAULT_MODEL"
    [problem] = effective.problems
    assert (problem.key, problem.line, problem.layer) == ("model", 1, "repo")
    assert 'model: "o1-pro" is not a model this Arbiter may use' in problem.message
    assert "claude-sonnet-4-6, gpt-4o-mini (ARBITER_ALLOWED_MODELS)" in problem.message
    assert problem.message.endswith("so gpt-4o is used")
    assert effective.config.language == "de"


def test_a_refused_model_falls_back_to_the_operators_model() -> None:
    effective = resolve(
        "model: o1-pro\n", operator_text="model: claude-sonnet-4-6\n", policy=POLICY
    )

    assert effective.model == "claude-sonnet-4-6"
    assert effective.problems[0].message.endswith("so claude-sonnet-4-6 is used")


def test_with_no_allowed_models_a_repo_keeps_the_operators_model() -> None:
    effective = resolve("model: gpt-4o-mini\n", policy=Policy())

    assert effective.model == "gpt-4o"
    assert "ARBITER_ALLOWED_MODELS is empty" in effective.problems[0].message


def test_a_repo_may_choose_an_allowed_model_or_name_the_default() -> None:
    assert resolve("model: claude-sonnet-4-6\n", policy=POLICY).model == "claude-sonnet-4-6"
    assert resolve("model: gpt-4o\n", policy=POLICY).problems == ()


# --- Bad files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", bad_file_params(BAD_FILES | MORE_BAD_FILES))
def test_a_bad_file_gives_one_precise_problem_and_the_defaults(case: BadFile) -> None:
    effective = resolve(case.text, policy=POLICY)

    [problem] = effective.problems
    assert (problem.layer, problem.file, problem.key, problem.line) == (
        "repo",
        ".arbiter.yml",
        case.key,
        case.line,
    )
    position = 0
    for fragment in case.says:
        found = problem.message.find(fragment, position)
        assert found >= 0, f"{fragment!r} not in (the rest of) {problem.message!r}"
        position = found + len(fragment)
    assert len(problem.message) < 600  # plain words, not a dump of the file
    assert not effective.repo_file_used
    assert effective.config == defaults(POLICY).config
    assert only_default_origins(effective)


def test_a_bad_file_over_operator_defaults_leaves_the_operator_defaults() -> None:
    effective = resolve(BAD_FILES["wrong type"].text, operator_text=OPERATOR, policy=POLICY)

    assert effective.config == resolve(None, operator_text=OPERATOR, policy=POLICY).config


def test_every_problem_of_a_file_is_listed() -> None:
    effective = resolve("reveiw: {}\nprofile: loud\npath_filters: [3]\n", policy=POLICY)

    assert [(p.key, p.line) for p in effective.problems] == [
        ("profile", 2),
        ("path_filters[0]", 3),
        ("reveiw", 1),
    ]


def test_a_file_just_under_the_limit_is_read() -> None:
    text = "profile: quiet\n"
    text += "#" * (MAX_FILE_BYTES - len(text) - 1) + "\n"

    assert resolve(text, policy=POLICY).config.profile == "quiet"
    assert resolve(text + "\n", policy=POLICY).problems[0].message.startswith("the file is 65,537")


def test_what_a_problem_quotes_back_is_bounded() -> None:
    effective = resolve(f"language: {'x' * 5000}\n", policy=POLICY)

    message = effective.problems[0].message
    assert "(5,000 characters)" in message
    assert len(message) < 300


# --- Globs: the reviewer core's syntax ---------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    ["src/**", "!**/*.snap", "*.lock", "docs/", "src/{api,web}/**", "pages/[id].tsx", "[!.]*"],
)
def test_globs_the_reviewer_core_understands_are_accepted(pattern: str) -> None:
    assert glob_problem(pattern, negatable=True) is None
    filters = PathFilters.parse([pattern])  # the reviewer core takes it as written
    assert (filters.include or filters.exclude) == (pattern.removeprefix("!"),)


def test_path_instruction_globs_cannot_be_negated() -> None:
    effective = resolve(
        "path_instructions:\n  - path: '!src/**'\n    instructions: hi\n", policy=POLICY
    )

    assert effective.problems == ()  # `!src/**` is a literal path there, as in the core
    assert glob_problem("", negatable=False) == "an empty pattern matches nothing"


# --- Showing it ----------------------------------------------------------------------------------


def test_the_rendered_config_reads_back_to_the_same_values() -> None:
    repo = (
        "instructions: |\n  Line one.\n  Line two.\nprofile: quiet\n"
        "path_instructions:\n  - path: src/**\n    instructions: 'Say \"why\": always.'\n"
        "auto_review:\n  labels: ['!skip', review]\nmodel: gpt-4o-mini\n"
    )
    effective = resolve(repo, operator_text=OPERATOR, policy=POLICY)

    shown = effective.render()
    again = resolve(shown, policy=POLICY)

    assert again.problems == ()
    assert again.config == effective.config
    assert "profile: quiet  # .arbiter.yml" in shown
    assert "  min_confidence: 0.7  # operator defaults (operator defaults)" in shown
    assert "  max_comments: 5  # profile quiet in .arbiter.yml" in shown
