"""docs/configuration.md keeps up with the schema: every key documented, the example valid."""

from __future__ import annotations

import re
from pathlib import Path

from config.repo import PROFILES, leaf_keys, resolve

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_key_is_documented() -> None:
    text = DOC.read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, re.MULTILINE))

    for key in leaf_keys():
        assert key.rsplit(".", 1)[-1] in documented, f"{key} is not in docs/configuration.md"
    for profile, (severity, comments) in PROFILES.items():
        assert f"| `{profile}` | `{severity}` | {comments} |" in text


def test_the_example_file_is_valid() -> None:
    example = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert example is not None

    effective = resolve(example.group(1))

    assert effective.problems == ()
    assert effective.max_comments == 8 and effective.min_severity == "major"


def test_the_readme_links_it() -> None:
    readme = (DOC.parents[1] / "README.md").read_text()
    assert "(docs/configuration.md)" in readme
