"""Prompt templates (text files) and the loader that renders them.

A template is `prompts/NAME.txt` (read as a resource of this package), with `string.Template`
placeholders (`$name`, `${name}`). Values go in exactly as given: a `$` inside a diff is never
read as a placeholder, and a placeholder without a value is an error rather than an empty
string. Templates are read once.
"""

from __future__ import annotations

import functools
import string
from importlib import resources

TEMPLATE_DIR = resources.files("prompts")


class PromptTemplateError(Exception):
    """A template is missing, or a placeholder got no value."""


@functools.cache
def template(name: str) -> string.Template:
    """The template `prompts/<name>.txt`."""
    path = TEMPLATE_DIR / f"{name}.txt"
    try:
        return string.Template(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PromptTemplateError(f"no prompt template {name!r} ({path}): {exc}") from None


def render(name: str, **values: str) -> str:
    """The template `name` with every placeholder filled from `values`."""
    try:
        return template(name).substitute(values)
    except KeyError as exc:
        raise PromptTemplateError(f"prompt template {name!r} needs a value for {exc}") from None


def placeholders(name: str) -> set[str]:
    """The placeholder names a template uses (for tests and for callers that check early)."""
    found: set[str] = set()
    for match in template(name).pattern.finditer(template(name).template):
        key = match.group("named") or match.group("braced")
        if key:
            found.add(key)
    return found
