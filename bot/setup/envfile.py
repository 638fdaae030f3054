"""Saving the new App's credentials: a few variables into `.env`, the private key into a file.

`.env` keeps every other byte as it was (comments, order, line endings, owner); a variable
already set to something else is replaced and reported, never silently. Both files hold
secrets, so both are 0600: the key file and a new `.env` are created so from the start, never
readable by others, not even briefly; an existing `.env` that others could read is tightened
before the secret goes in, and the update says so.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_ASSIGNMENT = re.compile(r"^[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*(.*)$")
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_./:@+,=-]*")
_KEY_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"  # bytes that are not UTF-8 come back out unchanged


@dataclass(frozen=True)
class EnvUpdate:
    """What `update_env_file` did to each variable, by the name it was given."""

    path: Path
    created: bool  # the file did not exist before
    added: tuple[str, ...]  # appended, or filled into an empty assignment
    replaced: tuple[str, ...]  # had a different value, now the new one
    unchanged: tuple[str, ...]  # already had this value
    names: frozenset[str]  # every variable the file assigns now, upper-cased
    tightened_from: int | None = None  # the mode it had, when others could read it


def update_env_file(
    path: Path, values: Mapping[str, str], *, comment: str | None = None
) -> EnvUpdate:
    """Set `values` in the dotenv file at `path`, creating it (mode 0600) when missing.

    Existing assignments of these names (any case, `export` or not, every occurrence) are
    rewritten in place; the others are appended, after `comment` when one is given.
    """
    try:
        original: bytes | None = path.read_bytes()
    except FileNotFoundError:
        original = None
    text = (original or b"").decode(_ENCODING, _ERRORS)
    newline = "\r\n" if "\r\n" in text else "\n"
    wanted = {name.upper(): (name, value) for name, value in values.items()}
    outcome: dict[str, str] = {}
    lines: list[str] = []
    for line in re.findall(r"[^\n]*\n|[^\n]+", text):  # lines with their endings
        content = line.rstrip("\r\n")
        match = _ASSIGNMENT.match(content)
        key = match.group(1).upper() if match else ""
        if match is None or key not in wanted:
            lines.append(line)
            continue
        value = wanted[key][1]
        old = dotenv_value(match.group(2))
        if old == value:
            outcome.setdefault(key, "unchanged")
            lines.append(line)
            continue
        outcome[key] = "replaced" if old or outcome.get(key) == "replaced" else "added"
        # Only the value changes: `export`, spacing and the name's case stay as they were.
        lines.append(f"{content[: match.start(2)]}{quote_value(value)}{line[len(content) :]}")
    missing = [key for key in wanted if key not in outcome]
    if missing:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines.append(newline)
        if comment:
            lines.append(f"# {comment}{newline}")
        for key in missing:
            name, value = wanted[key]
            lines.append(f"{name}={quote_value(value)}{newline}")
            outcome[key] = "added"
    updated = "".join(lines)
    tightened_from = None
    if original is None:
        _create_private(path, updated.encode(_ENCODING, _ERRORS))
    else:
        tightened_from = make_private(path)
        if updated != text:
            _rewrite_in_place(path, updated.encode(_ENCODING, _ERRORS))

    def named(kind: str) -> tuple[str, ...]:
        return tuple(wanted[key][0] for key in wanted if outcome[key] == kind)

    return EnvUpdate(
        path=path,
        created=original is None,
        added=named("added"),
        replaced=named("replaced"),
        unchanged=named("unchanged"),
        names=frozenset(
            m.group(1).upper()
            for m in (_ASSIGNMENT.match(x.rstrip("\r\n")) for x in lines)
            if m is not None and dotenv_value(m.group(2))
        ),
        tightened_from=tightened_from,
    )


def dotenv_value(raw: str) -> str:
    """The value of a dotenv assignment's right-hand side, as python-dotenv reads it (quotes
    removed, escapes in double quotes resolved, a trailing ` # comment` dropped)."""
    raw = raw.strip()
    if raw[:1] in ("'", '"'):
        quote_char, chars, escaped = raw[0], [], False
        for char in raw[1:]:
            if escaped:
                chars.append({"n": "\n", "t": "\t", "r": "\r"}.get(char, char))
                escaped = False
            elif char == "\\" and quote_char == '"':
                escaped = True
            elif char == quote_char:
                break
            else:
                chars.append(char)
        return "".join(chars)
    return re.split(r"[ \t]+#", raw, maxsplit=1)[0].strip()


def quote_value(value: str) -> str:
    """The value as a dotenv right-hand side: bare when that is unambiguous, else quoted."""
    if _PLAIN_VALUE.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def write_private_key(directory: Path, stem: str, pem: str) -> Path:
    """Save `pem` as `<stem>.private-key.pem` in `directory` (or `<stem>-2…` when taken),
    created with mode 0600 and never over an existing file."""
    safe = _KEY_NAME_UNSAFE.sub("-", stem).lstrip(".-") or "github-app"
    for attempt in range(1, 100):
        suffix = "" if attempt == 1 else f"-{attempt}"
        path = directory / f"{safe}{suffix}.private-key.pem"
        try:
            _create_private(path, pem.encode("ascii"))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free name for the private key file in {directory}")


def make_private(path: Path) -> int | None:
    """Make the existing file at `path` readable and writable by its owner alone (0600).

    Returns the mode it had when its group or others had any access, None when it was private
    already. Raises OSError, saying what to do, when it cannot be changed (another user owns
    it): no secret goes into a file others can read.
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077:
        return None
    try:
        path.chmod(0o600)
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"{exc.strerror}: it is readable by others (mode {mode:04o}) and must be made "
            "private (chmod 600) before a secret is written into it",
            str(path),
        ) from exc
    return mode


def _create_private(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _rewrite_in_place(path: Path, data: bytes) -> None:
    # In place rather than rename-over: keeps the file's mode, owner, symlink or bind mount.
    with path.open("r+b") as out:
        out.write(data)
        out.truncate()
        out.flush()
        os.fsync(out.fileno())
