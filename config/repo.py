"""The `.arbiter.yml` schema, and how a repository's file is merged over the operator's defaults.

`resolve()` is pure: the YAML texts in (the operator's defaults file, the repository's file),
an `EffectiveConfig` out, with where each value came from and every problem in plain words.
It never raises for a bad file. A file with a syntax error, an unknown key, a wrong type, a bad
glob or regex (too long, or one RE2 cannot match in linear time), or over 64 KB is not used at
all: that layer falls back to the one below it. A valid file that asks for what the operator
does not allow (a model not in ARBITER_ALLOWED_MODELS, a cost cap above
ARBITER_MAX_COST_PER_REVIEW_USD) loses only that key.

Layers, lowest first: the built-in defaults of the models below, the operator's defaults file
(ARBITER_REPO_CONFIG_DEFAULTS), the repository's file. Mappings merge key by key; a list or a
scalar replaces the one below it. A key written with no value (`review:`) counts as not set.
"""

from __future__ import annotations

import datetime
import difflib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from config.globs import MAX_GLOB_CHARS, compile_glob
from config.patterns import MAX_REGEX_CHARS, PatternError, compile_regex
from config.severity import Severity

if TYPE_CHECKING:
    from config.settings import Settings

REPO_FILE_NAMES = (".arbiter.yml", ".arbiter.yaml")  # read in this order; the first one found
MAX_FILE_BYTES = 64 * 1024
MAX_YAML_NODES = 10_000  # values after YAML aliases are expanded: no "billion laughs"
MAX_SHOWN = 60  # characters of a given value quoted back in a problem

Profile = Literal["quiet", "balanced", "thorough"]
FailOn = Literal["none", "critical", "major", "minor", "nit"]
FollowupAllow = Literal["collaborators", "everyone"]
LayerName = Literal["default", "setting", "operator", "repo"]

# What a profile sets unless the same layer (or one above it) sets the value itself.
PROFILES: dict[str, tuple[Severity, int]] = {
    "quiet": ("major", 5),
    "balanced": ("minor", 15),
    "thorough": ("nit", 50),
}
DEFAULT_PROFILE: Profile = "balanced"


# --- Checks shared by the schema --------------------------------------------------------------


def glob_problem(pattern: str, *, negatable: bool = False) -> str | None:
    """Why `pattern` is not a usable glob (the reviewer core's glob syntax), or None."""
    text = pattern.strip()
    if negatable and text.startswith("!"):
        text = text[1:].strip()
        if not text:
            return "'!' needs a pattern after it, e.g. !docs/**"
    if not text:
        return "an empty pattern matches nothing"
    if len(text) > MAX_GLOB_CHARS:
        return f"it is {len(text):,} characters long, over the limit of {MAX_GLOB_CHARS:,}"
    for opener, closer in (("[", "]"), ("{", "}")):
        if text.count(opener) > text.count(closer):
            literal = "[[]" if opener == "[" else "[{]"
            return (
                f"it has a {opener} without its closing {closer} "
                f"(write {literal} for a literal {opener})"
            )
    try:
        compile_glob(text)
    except PatternError as exc:
        return f"it is not a valid glob: {exc}"
    return None


def _path_filter(value: str) -> str:
    problem = glob_problem(value, negatable=True)
    if problem:
        raise ValueError(problem)
    return value


def _path_glob(value: str) -> str:
    problem = glob_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _branch_regex(value: str) -> str:
    if not value.strip():
        raise ValueError("an empty regular expression matches every branch")
    if len(value) > MAX_REGEX_CHARS:
        raise ValueError(
            f"it is {len(value):,} characters long, over the limit of {MAX_REGEX_CHARS:,}"
        )
    try:
        compile_regex(value)
    except PatternError as exc:
        raise ValueError(f"it is not a valid regular expression: {exc}") from None
    return value


PathFilter = Annotated[str, AfterValidator(_path_filter)]
PathGlob = Annotated[str, AfterValidator(_path_glob)]
BranchRegex = Annotated[str, AfterValidator(_branch_regex)]
Name = Annotated[str, Field(min_length=1, max_length=100)]


# --- The schema ---------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class PathInstructionEntry(_Section):
    path: PathGlob = Field(
        description="a glob of the files these instructions are for, e.g. src/api/**"
    )
    instructions: str = Field(
        min_length=1, max_length=4000, description="text for the reviewer, up to 4,000 characters"
    )


class AutoReview(_Section):
    enabled: bool = Field(
        default=True, description="true or false: review pull requests automatically"
    )
    drafts: bool = Field(default=False, description="true or false: review draft pull requests too")
    incremental: bool = Field(
        default=True,
        description="true or false: on a push, review only what changed since the last review",
    )
    base_branches: list[BranchRegex] = Field(
        default_factory=list,
        max_length=50,
        description=(
            "a list of regular expressions (RE2 syntax: no look-arounds or back-references; up "
            "to 50, each up to 200 characters), each matching a whole branch name, e.g. "
            '["release/.*"]: pull requests into these branches are reviewed too (the default '
            "branch always is)"
        ),
    )
    ignore_authors: list[Name] = Field(
        default_factory=list,
        max_length=200,
        description="a list of logins whose pull requests are not reviewed, e.g. [renovate-bot]",
    )
    ignore_title_keywords: list[Name] = Field(
        default_factory=list,
        max_length=50,
        description=(
            'a list of words: a pull request whose title contains one (any case, e.g. "WIP") '
            "is not reviewed"
        ),
    )
    labels: list[Name] = Field(
        default_factory=list,
        max_length=50,
        description=(
            "a list of labels: with plain ones, only pull requests carrying one of them are "
            "reviewed; !label skips pull requests carrying it"
        ),
    )


class ReviewSettings(_Section):
    max_comments: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="a whole number from 0 to 100: inline comments per review (default: profile)",
    )
    min_severity: Severity | None = Field(
        default=None,
        description="one of critical, major, minor, nit: findings below it are not posted "
        "(default: profile)",
    )
    min_confidence: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="a number from 0 to 1: findings the model is less sure of are not posted",
    )
    summary: bool = Field(default=True, description="true or false: post the summary comment")
    fail_on: FailOn = Field(
        default="none",
        description=(
            "one of none, critical, major, minor, nit: the commit status fails when a finding "
            "is at least this severe"
        ),
    )


class BudgetSettings(_Section):
    max_cost_per_review_usd: float | None = Field(
        default=None,
        gt=0,
        description=(
            "a positive number of US dollars, no higher than the operator's "
            "ARBITER_MAX_COST_PER_REVIEW_USD (a repository can only lower the cap)"
        ),
    )


class FollowupSettings(_Section):
    enabled: bool = Field(
        default=True, description="true or false: answer questions put to the bot"
    )
    allow: FollowupAllow = Field(
        default="collaborators",
        description="collaborators (people with write access) or everyone: who may ask",
    )


class RepoConfig(_Section):
    """One layer of configuration as written, and (with every value filled in) the effective
    configuration `resolve()` returns."""

    version: Literal[1] = Field(default=1, description="1 (the only version so far)")
    enabled: bool = Field(default=True, description="true or false: false turns Arbiter off here")
    language: str = Field(
        default="en",
        pattern=r"^[A-Za-z][A-Za-z0-9 _-]{0,39}$",
        description="the language of the comments: a name or code, e.g. en, de, pt-BR, Japanese",
    )
    profile: Profile = Field(
        default=DEFAULT_PROFILE,
        description=(
            "one of quiet (major findings, 5 comments), balanced (minor, 15) or "
            "thorough (nit, 50): sets review.min_severity and review.max_comments"
        ),
    )
    instructions: str = Field(
        default="", max_length=10_000, description="text for the reviewer, up to 10,000 characters"
    )
    path_filters: list[PathFilter] = Field(
        default_factory=list,
        max_length=200,
        description=(
            "a list of globs: !pattern excludes the files it matches; plain patterns, when "
            'there are any, are the only files reviewed, e.g. ["src/**", "!**/*.snap"]'
        ),
    )
    path_instructions: list[PathInstructionEntry] = Field(
        default_factory=list,
        max_length=100,
        description="a list of {path: glob, instructions: text} entries",
    )
    auto_review: AutoReview = Field(default_factory=AutoReview, description="a mapping")
    review: ReviewSettings = Field(default_factory=ReviewSettings, description="a mapping")
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description=(
            "a model name the operator allows in ARBITER_ALLOWED_MODELS (default: the "
            "operator's model)"
        ),
    )
    budget: BudgetSettings = Field(default_factory=BudgetSettings, description="a mapping")
    followup: FollowupSettings = Field(default_factory=FollowupSettings, description="a mapping")

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_a_number(cls, value: Any) -> Any:
        if isinstance(value, bool):  # YAML `true` would pass as 1
            raise ValueError("expected the number 1")
        return value


SECTIONS: dict[str, type[_Section]] = {
    "auto_review": AutoReview,
    "review": ReviewSettings,
    "budget": BudgetSettings,
    "followup": FollowupSettings,
}
DERIVED = ("review.min_severity", "review.max_comments")  # set by the profile unless written


# --- Results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """What the operator's process settings allow a repository."""

    default_model: str = "gpt-4o"
    allowed_models: frozenset[str] = frozenset()
    max_cost_per_review_usd: float = 0.50  # 0: no cap

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            default_model=settings.default_model,
            allowed_models=frozenset(m.strip() for m in settings.allowed_models if m.strip()),
            max_cost_per_review_usd=settings.max_cost_per_review_usd,
        )


@dataclass(frozen=True)
class Problem:
    """Something wrong in one file, in plain words: the key, what was given, what it accepts."""

    file: str  # ".arbiter.yml", or the operator's defaults file
    layer: Literal["operator", "repo"]
    key: str | None  # dotted ("review.max_comments", "path_filters[2]"); None: the whole file
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}, line {self.line}" if self.line else self.file
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Origin:
    """Where an effective value came from."""

    layer: LayerName
    label: str  # "built-in default", "profile quiet in .arbiter.yml", "ARBITER_DEFAULT_MODEL"…

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class EffectiveConfig:
    """The configuration a review runs with, where each value came from, and what was wrong."""

    config: RepoConfig  # every value filled in: profile-derived ones, model and cost cap too
    sources: Mapping[str, Origin]  # by dotted key, for every leaf of the schema
    problems: tuple[Problem, ...] = ()
    file: str | None = None  # the repository file that was read (None: there is none)
    branch: str | None = None  # set by the loader: the default branch and its head commit
    commit: str | None = None
    repo_file_used: bool = False  # False when there is none, or it was refused for problems

    @property
    def min_severity(self) -> Severity:
        return self.config.review.min_severity or PROFILES[self.config.profile][0]

    @property
    def max_comments(self) -> int:
        value = self.config.review.max_comments
        return PROFILES[self.config.profile][1] if value is None else value

    @property
    def model(self) -> str:
        return self.config.model or ""

    @property
    def max_cost_per_review_usd(self) -> float:
        """The cap in US dollars; 0 when the operator set no cap and neither file did."""
        return self.config.budget.max_cost_per_review_usd or 0.0

    @property
    def repo_problems(self) -> tuple[Problem, ...]:
        """What the repository's maintainers can fix: these are reported on pull requests."""
        return tuple(p for p in self.problems if p.layer == "repo")

    def render(self) -> str:
        """The effective configuration as YAML, each value commented with where it came from."""
        return render_yaml(self)


# --- Resolving ----------------------------------------------------------------------------------


def resolve(
    repo_text: str | None,
    *,
    operator_text: str | None = None,
    policy: Policy = Policy(),  # frozen: one shared default is safe
    repo_file: str = ".arbiter.yml",
    operator_file: str = "operator defaults",
) -> EffectiveConfig:
    """The effective configuration: the repository's file (None: it has none) over the
    operator's defaults (None: there are none) over the built-in defaults. Never raises."""
    problems: list[Problem] = []
    operator: dict[str, Any] = {}
    if operator_text is not None:
        layer = parse_layer(operator_text, operator_file, "operator")
        operator = layer.data
        problems += layer.problems
        problems += _check_budget(layer, operator_file, "operator", policy, fallback=None)
    repo: dict[str, Any] = {}
    repo_used = False
    if repo_text is not None:
        layer = parse_layer(repo_text, repo_file, "repo")
        repo = layer.data
        problems += layer.problems
        repo_used = not layer.problems
        operator_cap = (operator.get("budget") or {}).get("max_cost_per_review_usd")
        problems += _check_model(layer, repo_file, operator.get("model"), policy)
        problems += _check_budget(layer, repo_file, "repo", policy, fallback=operator_cap)
    layers = [  # highest first
        (repo, Origin("repo", repo_file)),
        (operator, Origin("operator", f"operator defaults ({operator_file})")),
    ]
    merged = _merge(operator, repo)
    sources: dict[str, Origin] = {}
    for key in leaf_keys():
        sources[key] = next(
            (origin for data, origin in layers if _has(data, key)),
            Origin("default", "built-in default"),
        )
    # Values the layers do not spell out: from the profile, or from the process settings.
    for key, index in (("review.min_severity", 0), ("review.max_comments", 1)):
        value, origin = _from_profile(key, index, layers)
        _put(merged, key, value)
        sources[key] = origin
    if "model" not in merged:
        merged["model"] = policy.default_model
        sources["model"] = Origin("setting", "ARBITER_DEFAULT_MODEL")
    if not _has(merged, "budget.max_cost_per_review_usd"):
        cap = policy.max_cost_per_review_usd
        _put(merged, "budget.max_cost_per_review_usd", cap if cap > 0 else None)
        sources["budget.max_cost_per_review_usd"] = Origin(
            "setting", "ARBITER_MAX_COST_PER_REVIEW_USD"
        )
    try:
        config = RepoConfig.model_validate(merged)
    except ValidationError:  # each layer was valid alone; this is a bug, not the user's mistake
        config = RepoConfig.model_validate({"model": policy.default_model})
    return EffectiveConfig(
        config=config,
        sources=sources,
        problems=tuple(problems),
        file=repo_file if repo_text is not None else None,
        repo_file_used=repo_used,
    )


def defaults(policy: Policy = Policy()) -> EffectiveConfig:
    """The configuration of a repository without a file and an operator without defaults."""
    return resolve(None, policy=policy)


def leaf_keys(model: type[BaseModel] = RepoConfig, prefix: str = "") -> Iterator[str]:
    """Every configurable key, dotted, in schema order."""
    for name in model.model_fields:
        section = None if prefix else SECTIONS.get(name)
        if section is not None:
            yield from leaf_keys(section, f"{name}.")
        else:
            yield prefix + name


def _from_profile(
    key: str, index: int, layers: list[tuple[dict[str, Any], Origin]]
) -> tuple[Any, Origin]:
    """The highest layer that writes `key` or a profile decides; a profile below an explicit
    value does not override it, and one above it does."""
    for data, origin in layers:
        if _has(data, key):
            return _get(data, key), origin
        if "profile" in data:
            profile = data["profile"]
            return PROFILES[profile][index], Origin(origin.layer, f"profile {profile} in {origin}")
    return PROFILES[DEFAULT_PROFILE][index], Origin(
        "default", f"built-in default (profile {DEFAULT_PROFILE})"
    )


def _check_model(
    layer: Layer, file: str, operator_model: str | None, policy: Policy
) -> list[Problem]:
    """A repository's `model` must be one the operator allows; if not, it is dropped."""
    data = layer.data
    chosen = data.get("model")
    if chosen is None:
        return []
    fallback = operator_model or policy.default_model
    allowed = (
        policy.allowed_models
        | {policy.default_model}
        | ({operator_model} if operator_model else set())
    )
    if chosen in allowed:
        return []
    del data["model"]
    listed = ", ".join(sorted(policy.allowed_models))
    allows = (
        f"the operator allows {listed} (ARBITER_ALLOWED_MODELS)"
        if listed
        else "the operator allows no other model (ARBITER_ALLOWED_MODELS is empty)"
    )
    return [
        Problem(
            file,
            "repo",
            "model",
            f"model: {_show(chosen)} is not a model this Arbiter may use; {allows}, so "
            f"{fallback} is used",
            layer.lines.get("model"),
        )
    ]


def _check_budget(
    layer: Layer,
    file: str,
    name: Literal["operator", "repo"],
    policy: Policy,
    *,
    fallback: float | None,
) -> list[Problem]:
    """A cost cap can only lower ARBITER_MAX_COST_PER_REVIEW_USD; a higher one is dropped."""
    data = layer.data
    budget = data.get("budget") or {}
    asked = budget.get("max_cost_per_review_usd")
    cap = policy.max_cost_per_review_usd
    if asked is None or cap <= 0 or asked <= cap:
        return []
    del budget["max_cost_per_review_usd"]
    if not budget:
        del data["budget"]
    used = fallback if fallback is not None and fallback <= cap else cap
    who = "a repository" if name == "repo" else "the defaults file"
    return [
        Problem(
            file,
            name,
            "budget.max_cost_per_review_usd",
            f"budget.max_cost_per_review_usd: {asked:g} is above the operator's cap of "
            f"${cap:.2f} per review (ARBITER_MAX_COST_PER_REVIEW_USD); {who} can only "
            f"lower it, so ${used:.2f} applies",
            layer.lines.get("budget.max_cost_per_review_usd"),
        )
    ]


# --- One layer: YAML text to a checked mapping --------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """What one file sets: `data` (keys with no value left out) is {} when it has problems."""

    data: dict[str, Any]
    problems: list[Problem]
    lines: dict[str, int] = field(default_factory=dict)  # dotted key -> line of the key


def parse_layer(
    text: str, file: str = ".arbiter.yml", layer: Literal["operator", "repo"] = "repo"
) -> Layer:
    """Read and check one file (the operator's defaults or a repository's .arbiter.yml)."""
    data, problems, root = _parse(text, file, layer)
    return Layer(data, problems, _key_lines(root) if root is not None else {})


def _parse(
    text: str, file: str, layer: Literal["operator", "repo"]
) -> tuple[dict[str, Any], list[Problem], yaml.Node | None]:
    def problem(message: str, key: str | None = None, line: int | None = None) -> Problem:
        return Problem(file, layer, key, message, line)

    def refused(*problems: Problem) -> tuple[dict[str, Any], list[Problem], None]:
        return {}, list(problems), None

    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        return refused(
            problem(
                f"the file is {size:,} bytes, over the limit of {MAX_FILE_BYTES:,} bytes "
                "(64 KB), so it was not read; keep it short: it holds settings, not data"
            )
        )
    try:
        root, data = _load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        column = f", column {mark.column + 1}" if mark is not None else ""
        said = ", ".join(str(part) for part in (exc.context, exc.problem) if part)
        what = " ".join((said or "invalid YAML").split())
        return refused(problem(f"the YAML does not parse: {what} (line {line}{column})", line=line))
    except yaml.YAMLError as exc:
        return refused(problem(f"the YAML does not parse: {' '.join(str(exc).split())}"))
    except _TooBig as exc:
        return refused(problem(str(exc)))
    if root is None:
        return refused(
            problem(
                "the file is empty (or only comments): write the keys to change, e.g. "
                "`profile: quiet`, or delete the file"
            )
        )
    if not isinstance(data, dict):
        return refused(
            problem(
                f"the file holds {_describe(data)}, but it must be a mapping of keys, e.g. "
                '`profile: quiet` on one line and `path_filters: ["!docs/**"]` on the next',
                line=root.start_mark.line + 1,
            )
        )
    duplicates = list(_duplicate_keys(root))
    if duplicates:
        return refused(
            *(
                problem(
                    f"{key} is written twice (lines {first} and {second}); YAML keeps only the "
                    "second, so write it once",
                    key=key,
                    line=second,
                )
                for key, first, second in duplicates
            )
        )
    data = _drop_nulls(data)
    try:
        RepoConfig.model_validate(data)
    except ValidationError as exc:
        return refused(
            *(
                problem(_explain(error), key=_error_key(error), line=_line(root, error))
                for error in exc.errors(include_url=False)
            )
        )
    return data, [], root


class _TooBig(Exception):
    pass


def _load_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:
            raise _TooBig("the YAML is nested too deeply to be a configuration file") from None
        if root is None:
            return None, None
        _count_nodes(root)
        return root, loader.construct_document(root)
    finally:
        loader.dispose()


def _count_nodes(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand it past MAX_YAML_NODES values."""
    seen = 0
    stack = [root]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_YAML_NODES:
            raise _TooBig(
                f"the YAML expands to more than {MAX_YAML_NODES:,} values (aliases repeating "
                "other values?); a configuration file needs far fewer"
            )
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack += (key, value)
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value


def _key_lines(root: yaml.Node, prefix: str = "") -> dict[str, int]:
    """The line of every mapping key, by dotted key (list items are not followed)."""
    lines: dict[str, int] = {}
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode):
                name = f"{prefix}{key.value}"
                lines.setdefault(name, key.start_mark.line + 1)
                lines.update(_key_lines(value, f"{name}."))
    return lines


def _duplicate_keys(root: yaml.Node, prefix: str = "") -> Iterator[tuple[str, int, int]]:
    if not isinstance(root, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key, value in root.value:
        if not isinstance(key, yaml.ScalarNode):
            continue
        name = f"{prefix}{key.value}"
        line = key.start_mark.line + 1
        if name in seen:
            yield name, seen[name], line
        else:
            seen[name] = line
        yield from _duplicate_keys(value, f"{name}.")


def _drop_nulls(data: dict[str, Any]) -> dict[str, Any]:
    """`key:` with no value means "not set"; mappings are copied, never shared."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        out[key] = _drop_nulls(value) if isinstance(value, dict) else value
    return out


# --- Problems in plain words --------------------------------------------------------------------


def _explain(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    key = _dotted(loc)
    given = error.get("input")
    if kind in ("extra_forbidden", "invalid_key"):
        parent = _model_at(loc[:-1])
        known = list(parent.model_fields) if parent is not None else []
        where = f"under {_dotted(loc[:-1])}" if loc[:-1] else "at the top level"
        if kind == "invalid_key":  # YAML reads on/off/yes/no (unquoted) as true or false
            return (
                f"{_error_key(error)}: YAML reads this key as {_describe(given)}, not a name "
                "(unquoted on, off, yes and no are true or false: quote it if you meant the "
                f"word); the keys {where} are: {', '.join(known)}"
            )
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{key}: not a key Arbiter knows{hint}; the keys {where} are: {', '.join(known)}"
    field_key, description = _accepts(loc)
    accepts = f"{'it' if field_key == key else field_key} accepts {description}"
    if kind == "missing":
        return f"{key} is missing; {accepts}"
    if kind == "value_error":
        reason = str(error.get("msg", "")).removeprefix("Value error, ")
        return f"{key}: {_show(given)} is not accepted: {reason}; {accepts}"
    return f"{key}: got {_describe(given)}; {accepts}"


def _error_key(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    if error["type"] == "invalid_key":  # pydantic puts the bad key itself last
        given = error.get("input")
        name = "true" if given is True else "false" if given is False else str(given)
        return _dotted((*loc[:-1], name))
    return _dotted(loc)


def _dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema model a location points into (list indexes skipped)."""
    model: type[BaseModel] = RepoConfig
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(str(part))
        if info is None:
            return None
        inner = _model_in(info.annotation)
        if inner is None:
            return None
        model = inner
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _accepts(loc: tuple[Any, ...]) -> tuple[str, str]:
    """The field an error location is in (for a list item: the list) and what it accepts."""
    while loc and isinstance(loc[-1], int):
        loc = loc[:-1]
    model = _model_at(loc[:-1]) if loc else None
    info = model.model_fields.get(str(loc[-1])) if model is not None else None
    if info is None:
        return _dotted(loc), "another value"
    text = info.description or "another value"
    section = _model_in(info.annotation)
    if text == "a mapping" and section is not None:
        text = f"a mapping with the keys {', '.join(section.model_fields)}"
    return _dotted(loc), text


def _describe(value: Any) -> str:
    """A value as a YAML writer would recognise it, bounded (never the whole of a big value)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, datetime.date):  # YAML reads 2024-01-01 as a date
        return f"the date {value.isoformat()}"
    if isinstance(value, str):
        size = f" ({len(value):,} characters)" if len(value) > MAX_SHOWN else ""
        return f"the text {_show(value)}{size}"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, dict):
        keys = ", ".join(str(k) for k in list(value)[:5])
        return f"a mapping (keys {keys})" if keys else "an empty mapping"
    return f"a {type(value).__name__} value"


def _show(value: Any) -> str:
    if not isinstance(value, str):
        return _describe(value)
    text = " ".join(value.split())
    if len(text) > MAX_SHOWN:
        text = text[: MAX_SHOWN - 1] + "…"
    return json.dumps(text, ensure_ascii=False)


def _line(root: yaml.Node, error: Mapping[str, Any]) -> int | None:
    """The line of the value (or, for an unknown key, the key) an error is about."""
    node: yaml.Node | None = root
    key_node: yaml.Node | None = None
    loc = tuple(error["loc"])
    if error["type"] == "invalid_key":  # the key is not text: find it by its tag
        loc = loc[:-1]
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(
                (
                    (k, v)
                    for k, v in node.value
                    if isinstance(k, yaml.ScalarNode) and k.value == str(part)
                ),
                None,
            )
            if pair is None:
                break
            key_node, node = pair
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            key_node, node = None, node.value[part]
        else:
            break
    if error["type"] == "invalid_key" and isinstance(node, yaml.MappingNode):
        key_node = next((k for k, _ in node.value if k.tag != _STR_TAG), None)
    target = key_node if error["type"] in ("extra_forbidden", "invalid_key") else node
    target = target or node
    return target.start_mark.line + 1 if target is not None else None


# --- Merging ------------------------------------------------------------------------------------


def _merge(lower: Mapping[str, Any], upper: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(lower)
    for key, value in upper.items():
        below = out.get(key)
        if isinstance(value, dict) and isinstance(below, dict):
            out[key] = _merge(below, value)
        else:
            out[key] = value
    return out


def _has(data: Mapping[str, Any], key: str) -> bool:
    head, _, rest = key.partition(".")
    if head not in data:
        return False
    if not rest:
        return True
    inner = data[head]
    return isinstance(inner, dict) and _has(inner, rest)


def _get(data: Mapping[str, Any], key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def _put(data: dict[str, Any], key: str, value: Any) -> None:
    *path, last = key.split(".")
    for part in path:
        data = data.setdefault(part, {})
    data[last] = value


# --- Showing the effective configuration --------------------------------------------------------


def render_yaml(effective: EffectiveConfig) -> str:
    """YAML that `resolve()` reads back to the same values, each commented with its origin."""
    values = effective.config.model_dump(mode="json")
    lines: list[str] = []
    for name in RepoConfig.model_fields:
        if name in SECTIONS:
            lines.append(f"{name}:")
            for sub in SECTIONS[name].model_fields:
                key = f"{name}.{sub}"
                lines += _yaml_entry(f"  {sub}", values[name][sub], effective.sources.get(key))
        else:
            lines += _yaml_entry(name, values[name], effective.sources.get(name))
    return "\n".join(lines) + "\n"


def _yaml_entry(label: str, value: Any, origin: Origin | None) -> list[str]:
    comment = f"  # {origin}" if origin is not None else ""
    indent = " " * (len(label) - len(label.lstrip()) + 2)
    # A block of text as YAML's literal block; one with trailing blank lines is left to JSON.
    if (
        isinstance(value, str)
        and "\n" in value
        and not value[:1].isspace()
        and not value.endswith("\n\n")
    ):
        chomp = "" if value.endswith("\n") else "-"
        body = [indent + line if line else "" for line in value.rstrip("\n").split("\n")]
        return [f"{label}: |{chomp}{comment}", *body]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = [f"{label}:{comment}"]
        for item in value:
            first = True
            for k, v in item.items():
                out.append(f"{indent}{'- ' if first else '  '}{k}: {_scalar(v)}")
                first = False
        return out
    return [f"{label}: {_scalar(value)}{comment}"]


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str) and _PLAIN.fullmatch(value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value, ensure_ascii=False)  # JSON strings and lists are YAML too


_STR_TAG = "tag:yaml.org,2002:str"
_PLAIN = re.compile(r"[A-Za-z_][\w.-]*")
