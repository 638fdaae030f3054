"""Every setting of config/settings.py is in .env.example and in docs/deployment.md's reference,
with its real default, and nothing that is not a setting passes for one there or in the
deployment files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config.settings import Settings, env_name
from tests.deploy import project
from tests.deploy.settings_reference import (
    COMPOSE_VARIABLES,
    REGENERATE,
    default_value,
    env_value,
    is_secret,
    reference_block,
    render_env_example,
    render_reference,
)

SETTINGS = {env_name(name): name for name in Settings.model_fields}
_ASSIGNMENT = re.compile(r"^(?P<commented>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
_VARIABLE = re.compile(r"\b(?:ARBITER_[A-Z0-9_]+|OPENAI_API_KEY|ANTHROPIC_API_KEY)\b")


def _env_example() -> list[tuple[str, str, bool]]:
    """(name, value, commented) of each assignment line of .env.example."""
    found = []
    for line in project.ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if match := _ASSIGNMENT.match(line.strip()):
            found.append((match["name"], match["value"], bool(match["commented"])))
    return found


def _reference_rows() -> dict[str, str]:
    """Variable → default cell of each row of the generated settings reference."""
    block = reference_block(project.DEPLOYMENT_DOC.read_text(encoding="utf-8"))
    assert block is not None, "docs/deployment.md has lost its settings reference markers"
    rows: dict[str, str] = {}
    for line in block.splitlines():
        if match := re.match(r"^\| `([A-Z][A-Z0-9_]*)` \| (.*?) \|", line):
            assert match[1] not in rows, f"{match[1]} appears twice in the settings reference"
            rows[match[1]] = match[2]
    return rows


def test_env_example_lists_every_setting_once_and_nothing_else() -> None:
    names = [name for name, _, _ in _env_example()]
    settings_listed = [n for n in names if n in SETTINGS]
    others = {n for n in names if n not in SETTINGS}
    missing = sorted(set(SETTINGS) - set(names))
    twice = sorted({n for n in settings_listed if settings_listed.count(n) > 1})
    assert not missing, f".env.example lacks {missing}; run {REGENERATE}"
    assert not twice, f".env.example lists {twice} more than once"
    assert others <= {v for v, _, _ in COMPOSE_VARIABLES}, (
        f".env.example lists {sorted(others)}, which are not settings; run {REGENERATE}"
    )


def test_env_example_values_are_the_defaults_and_secrets_are_empty() -> None:
    for name, value, commented in _env_example():
        if name not in SETTINGS:
            continue
        field = SETTINGS[name]
        assert commented, f"{name} is uncommented: .env.example must change nothing when copied"
        if is_secret(field):
            assert value == "", f"{name} is a secret and must be left empty in .env.example"
        else:
            expected = env_value(default_value(field))
            assert value == expected, f".env.example: {name}={value}, the default is {expected!r}"


def test_env_example_defaults_load_as_the_defaults(tmp_path: Path) -> None:
    # Uncomment every line that has a value: the settings read must be exactly the defaults, so
    # the values are written as Arbiter parses them (JSON lists, true/false, numbers).
    lines = [f"{name}={value}" for name, value, _ in _env_example() if name in SETTINGS and value]
    env_file = tmp_path / "uncommented.env"
    env_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from_file = Settings(_env_file=env_file)  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert from_file.model_dump() == defaults.model_dump()


def test_env_example_is_the_generated_one() -> None:
    assert project.ENV_EXAMPLE.read_text(encoding="utf-8") == render_env_example(), (
        f".env.example differs from what config/settings.py generates; run {REGENERATE}"
    )


def test_compose_variables_of_env_example_are_used_by_compose() -> None:
    compose_text = project.COMPOSE_FILE.read_text(encoding="utf-8")
    for variable, default, _ in COMPOSE_VARIABLES:
        if variable.startswith("COMPOSE_"):
            continue  # read by docker compose itself
        used = re.findall(r"\$\{" + variable + r"(?::-([^}]*))?\}", compose_text)
        assert used, f".env.example offers {variable}, which docker-compose.yml never reads"
        assert set(used) == {default}, (
            f"{variable}: compose defaults {used}, .env.example {default}"
        )


def test_reference_lists_every_setting_and_nothing_else() -> None:
    rows = _reference_rows()
    missing = sorted(set(SETTINGS) - set(rows))
    unknown = sorted(set(rows) - set(SETTINGS))
    assert not missing, f"docs/deployment.md's settings reference lacks {missing}; run {REGENERATE}"
    assert not unknown, f"the settings reference lists {unknown}, which are not settings"


def test_reference_defaults_are_the_defaults() -> None:
    for name, cell in _reference_rows().items():
        if name not in SETTINGS:
            continue
        field = SETTINGS[name]
        value = env_value(default_value(field))
        expected = "– (secret)" if is_secret(field) else (f"`{value}`" if value else "–")
        assert cell == expected, f"reference: {name} shows {cell}, the default is {expected}"


def test_reference_is_the_generated_one() -> None:
    block = reference_block(project.DEPLOYMENT_DOC.read_text(encoding="utf-8"))
    assert block == render_reference(), (
        f"docs/deployment.md's settings reference is stale; run {REGENERATE}"
    )


def _variables_in(path: Path) -> set[str]:
    return set(_VARIABLE.findall(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    "path",
    [
        project.DEPLOYMENT_DOC,
        project.COMPOSE_FILE,
        project.DOCKERFILE,
        *project.K8S.glob("*.yaml"),
        *project.PROMETHEUS.glob("*.yml"),
        project.DEPLOY / "nginx.conf",
        project.DEPLOY / "Caddyfile",
    ],
    ids=lambda p: str(p.relative_to(project.ROOT)),
)
def test_every_variable_named_in_deployment_files_is_a_setting(path: Path) -> None:
    unknown = sorted(_variables_in(path) - set(SETTINGS))
    assert not unknown, f"{path.relative_to(project.ROOT)} names {unknown}: no such setting"


def test_k8s_configmap_and_secret_carry_only_settings() -> None:
    for path, document in project.k8s_documents():
        if document["kind"] not in {"ConfigMap", "Secret"}:
            continue
        keys = set(document.get("data") or {}) | set(document.get("stringData") or {})
        # The template's commented-out keys too: they are what operators uncomment.
        text = path.read_text(encoding="utf-8")
        keys |= set(re.findall(r"^\s*#\s*([A-Z][A-Z0-9_]*):", text, re.MULTILINE))
        unknown = sorted(keys - set(SETTINGS))
        assert not unknown, f"{path.name}: {unknown} are not settings"
        values = {**(document.get("data") or {}), **(document.get("stringData") or {})}
        empty = sorted(k for k, v in values.items() if v in ("", None))
        assert not empty, f"{path.name}: {empty} set to an empty string, which is not 'unset'"
