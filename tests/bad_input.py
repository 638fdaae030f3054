"""The bad-input corpus: malformed and hostile webhook requests for both platforms, as raw bytes.

`build_corpus` mutates the shared fixtures into more than 200 requests: headers, signatures,
encodings, sizes, compression (gzip, deflate, bombs), JSON shapes and field types. Each case is
the request exactly as sent and the answer it must get. A few controls (well-formed deliveries,
compressed, chunked or as large as allowed) must be accepted: they prove the checks are not
refusing everything. `WRONG_TYPES` are correctly signed payloads whose fields have the wrong type.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import hmac
import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal
from urllib.parse import quote

from tests.conftest import fixture_bytes, fixture_json
from tests.rawhttp import AUTO, HeaderValue, request_bytes

MIB = 1024 * 1024
DEFAULT_LIMIT = 25 * MIB  # ARBITER_MAX_WEBHOOK_BYTES's default
OPENED = "github/webhooks/pull_request/opened.payload.json"
MR_OPEN = "gitlab/webhooks/merge_request.json"
DELETE = object()  # a mutation that removes the key

PlatformName = Literal["github", "gitlab"]


@dataclass(frozen=True)
class Case:
    """One request of the corpus and what it must be answered."""

    name: str
    platform: PlatformName
    request: bytes
    expect: int | None  # the status; None: any 4xx, or the connection closed (a cut-off body)
    delivery: str | None  # the delivery id it would be stored under
    json_reason: bool = True  # answered by the webhook (JSON `error`), not by the HTTP parser
    half_close: bool = False  # the body stops short: shut the sending side after it
    # Large or compressed: sent on its own, so that cases sent together never spend the budget
    # of unverified bytes between them (they would be answered 429, rightly, but not as planned).
    alone: bool = False

    @property
    def accepted(self) -> bool:
        return self.expect in (200, 202)


# --- Payloads with a field of the wrong type ---------------------------------------------------

GITHUB_BASES: dict[str, tuple[str, str]] = {
    "pr": ("pull_request", "pull_request/opened.payload.json"),
    "pr_installed": (
        "pull_request",
        "pull_request/ready_for_review.with-installation.payload.json",
    ),
    "review_comment": (
        "pull_request_review_comment",
        "pull_request_review_comment/created.payload.json",
    ),
    "pr_comment": ("issue_comment", "issue_comment/created.payload.json"),
    "pr_comment_edited": ("issue_comment", "issue_comment/edited.payload.json"),
    "installation": ("installation", "installation/created.payload.json"),
    "repositories": ("installation_repositories", "installation_repositories/added.payload.json"),
}
GITLAB_BASES: dict[str, tuple[str, str]] = {
    "mr": ("Merge Request Hook", "merge_request.json"),
    "mr_update": ("Merge Request Hook", "service_merge_request.json"),
    "note": ("Note Hook", "note_merge_request.json"),
}

Mutation = tuple[tuple[str, ...], Any]


@dataclass(frozen=True)
class WrongType:
    """A delivery of `base` with `changes` applied: signed correctly, and still malformed."""

    label: str
    platform: PlatformName
    base: str
    changes: tuple[Mutation, ...]

    @property
    def event(self) -> str:
        bases = GITHUB_BASES if self.platform == "github" else GITLAB_BASES
        return bases[self.base][0]

    def payload(self) -> dict[str, Any]:
        if self.platform == "github":
            data: dict[str, Any] = fixture_json(f"github/webhooks/{GITHUB_BASES[self.base][1]}")
            if self.base.startswith("pr_comment"):
                # The fixtures comment on a plain issue; on a pull request is what Arbiter reads.
                data["issue"]["pull_request"] = {"url": "https://api.github.com/repos/o/r/pulls/1"}
        else:
            data = fixture_json(f"gitlab/webhooks/{GITLAB_BASES[self.base][1]}")
        data = copy.deepcopy(data)
        for path, value in self.changes:
            _set(data, path, value)
        return data

    def body(self) -> bytes:
        return json.dumps(self.payload()).encode()

    def named_in(self, reason: str) -> bool:
        """Whether `reason` names a field this case broke (or one inside it)."""
        return any(f"'{'.'.join(path)}" in reason for path, _ in self.changes)


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    *parents, last = path
    for key in parents:
        data = data[key]
    if value is DELETE:
        data.pop(last, None)
    else:
        data[last] = value


def _gh(label: str, base: str, *changes: Mutation) -> WrongType:
    return WrongType(label, "github", base, changes)


def _gl(label: str, base: str, *changes: Mutation) -> WrongType:
    return WrongType(label, "gitlab", base, changes)


WRONG_TYPES: list[WrongType] = [
    _gh("number is a string", "pr", (("number",), "abc")),
    _gh("number is a float", "pr", (("number",), 1.5)),
    _gh("number is a boolean", "pr", (("number",), True)),
    _gh("number is negative", "pr", (("number",), -3)),
    _gh("number is beyond 64 bits", "pr", (("number",), 2**64)),
    _gh("no number anywhere", "pr", (("number",), DELETE), (("pull_request", "number"), DELETE)),
    _gh(
        "pull_request.number is a string",
        "pr",
        (("number",), DELETE),
        (("pull_request", "number"), "x"),
    ),
    _gh("pull_request is a list", "pr", (("pull_request",), [])),
    _gh("action is a number", "pr", (("action",), 5)),
    _gh("action holds a NUL", "pr", (("action",), "opened\u0000")),
    _gh("repository is a string", "pr", (("repository",), "Codertocat/Hello-World")),
    _gh("repository.full_name is a number", "pr", (("repository", "full_name"), 5)),
    _gh("installation.id is a string", "pr_installed", (("installation", "id"), "abc")),
    _gh("installation is a list", "pr_installed", (("installation",), [1])),
    _gh("sender is a string", "pr", (("sender",), "Codertocat")),
    _gh("sender.login is a number", "pr", (("sender", "login"), 5)),
    _gh("sender.id is a string", "pr", (("sender", "id"), "x")),
    _gh("review comment without id", "review_comment", (("comment", "id"), DELETE)),
    _gh("review comment id is a string", "review_comment", (("comment", "id"), "x")),
    _gh("review comment id is null", "review_comment", (("comment", "id"), None)),
    _gh("in_reply_to_id is a string", "review_comment", (("comment", "in_reply_to_id"), "x")),
    _gh("line is a string", "review_comment", (("comment", "line"), "12")),
    _gh("comment body is a number", "review_comment", (("comment", "body"), 5)),
    _gh("comment path is a list", "review_comment", (("comment", "path"), ["a.py"])),
    _gh("comment user is a string", "review_comment", (("comment", "user"), "x")),
    _gh(
        "review comment's PR number is a string",
        "review_comment",
        (("pull_request", "number"), "x"),
    ),
    _gh("comment is a string", "review_comment", (("comment",), "hi")),
    _gh("PR comment without id", "pr_comment", (("comment", "id"), DELETE)),
    _gh("PR comment id is a float", "pr_comment", (("comment", "id"), 1.5)),
    _gh("issue number is a string", "pr_comment", (("issue", "number"), "x")),
    _gh("issue is a list", "pr_comment", (("issue",), [])),
    _gh(
        "edited body's old text is a number", "pr_comment_edited", (("changes", "body", "from"), 5)
    ),
    _gh("edited body change is a string", "pr_comment_edited", (("changes", "body"), "x")),
    _gh("installation event without installation", "installation", (("installation",), DELETE)),
    _gh("installation event id is a string", "installation", (("installation", "id"), "x")),
    _gh(
        "repositories event without installation id",
        "repositories",
        (("installation", "id"), DELETE),
    ),
    _gl("iid is a string", "mr", (("object_attributes", "iid"), "x")),
    _gl("iid is missing", "mr", (("object_attributes", "iid"), DELETE)),
    _gl("iid is a float", "mr", (("object_attributes", "iid"), 1.0)),
    _gl("object_attributes is a list", "mr", (("object_attributes",), [])),
    _gl("object_kind is a number", "mr", (("object_kind",), 5)),
    _gl("no object_kind", "mr", (("object_kind",), DELETE), (("event_type",), DELETE)),
    _gl("object_kind holds a NUL", "mr", (("object_kind",), "merge_request\u0000")),
    _gl("project is a string", "mr", (("project",), "gitlabhq/gitlab-test")),
    _gl("project path is a number", "mr", (("project", "path_with_namespace"), 5)),
    _gl("user is a list", "mr", (("user",), [])),
    _gl("username is a number", "mr", (("user", "username"), 5)),
    _gl("user id is a string", "mr", (("user", "id"), "x")),
    _gl("action is a number", "mr", (("object_attributes", "action"), 5)),
    _gl("oldrev is a number", "mr_update", (("object_attributes", "oldrev"), 5)),
    _gl(
        "draft change is a string",
        "mr",
        (("changes", "draft"), {"previous": False, "current": "yes"}),
    ),
    _gl("note without merge_request", "note", (("merge_request",), DELETE)),
    _gl("merge_request iid is a string", "note", (("merge_request", "iid"), "x")),
    _gl("note without id", "note", (("object_attributes", "id"), DELETE)),
    _gl("note id is a string", "note", (("object_attributes", "id"), "1244")),
    _gl("note body is a number", "note", (("object_attributes", "note"), 5)),
    _gl("position is a string", "note", (("object_attributes", "position"), "x")),
    _gl(
        "position line is a string",
        "note",
        (("object_attributes", "position"), {"new_line": "x", "new_path": "a.py"}),
    ),
    _gl(
        "position path is a number",
        "note",
        (("object_attributes", "position"), {"new_line": 3, "new_path": 5}),
    ),
    _gl("discussion id is a number", "note", (("object_attributes", "discussion_id"), 5)),
    _gl("system is a string", "note", (("object_attributes", "system"), "no")),
    _gl("noteable_type is a number", "note", (("object_attributes", "noteable_type"), 5)),
]


# --- Compression -------------------------------------------------------------------------------


@cache
def _zero_blocks(mib: int) -> bytes:
    """Raw deflate of `mib` MiB of zeros: one flushed block repeated (blocks are independent
    after a full flush), so a 2 GiB bomb takes milliseconds to build."""
    one = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = one.compress(bytes(MIB)) + one.flush(zlib.Z_FULL_FLUSH)
    return block * mib + zlib.compressobj(9, zlib.DEFLATED, -15).flush()


@cache
def _zeros_crc32(mib: int) -> int:
    crc, zeros = 0, bytes(16 * MIB)
    for _ in range(mib // 16):
        crc = zlib.crc32(zeros, crc)
    return zlib.crc32(bytes((mib % 16) * MIB), crc)


def gzip_bomb(mib: int) -> bytes:
    """A valid gzip stream of `mib` MiB of zeros, about a thousandth of that on the wire."""
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", _zeros_crc32(mib), (mib * MIB) & 0xFFFFFFFF)
    return header + _zero_blocks(mib) + trailer


def zlib_bomb(mib: int) -> bytes:
    """The same as `deflate` (RFC 1950: zlib header and Adler-32)."""
    adler = (((mib * MIB) % 65521) << 16) | 1  # Adler-32 of zeros: a stays 1, b counts them
    return b"\x78\xda" + _zero_blocks(mib) + struct.pack(">I", adler)


def raw_deflate(data: bytes) -> bytes:
    squeeze = zlib.compressobj(6, zlib.DEFLATED, -15)
    return squeeze.compress(data) + squeeze.flush()


# --- Building requests -------------------------------------------------------------------------


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


Headers = Mapping[str, HeaderValue | None]  # None: leave the header out


class _Builder:
    def __init__(self, secret: str, token: str) -> None:
        self.secret = secret
        self.token = token
        self.cases: list[Case] = []

    def _delivery(self) -> str:
        return f"bad-{len(self.cases):04d}"

    def github(
        self,
        name: str,
        body: bytes,
        *,
        expect: int | None,
        event: str = "pull_request",
        headers: Headers | None = None,
        wire: bytes | None = None,
        signed_as: bytes | None = None,
        **request: Any,
    ) -> None:
        """A GitHub delivery of `body`, signed over it (or over `signed_as`), sent as `wire`."""
        delivery = self._delivery()
        base: Headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": sign(body if signed_as is None else signed_as, self.secret),
        }
        self._add(
            name,
            "github",
            base,
            headers,
            wire if wire is not None else body,
            expect,
            delivery,
            request,
        )

    def gitlab(
        self,
        name: str,
        body: bytes,
        *,
        expect: int | None,
        event: str = "Merge Request Hook",
        headers: Headers | None = None,
        wire: bytes | None = None,
        **request: Any,
    ) -> None:
        delivery = self._delivery()
        base: Headers = {
            "Content-Type": "application/json",
            "X-Gitlab-Event": event,
            "X-Gitlab-Token": self.token,
            "Idempotency-Key": delivery,
        }
        self._add(
            name,
            "gitlab",
            base,
            headers,
            wire if wire is not None else body,
            expect,
            delivery,
            request,
        )

    def _add(
        self,
        name: str,
        platform: PlatformName,
        base: Headers,
        overrides: Headers | None,
        wire: bytes,
        expect: int | None,
        delivery: str,
        request: dict[str, Any],
    ) -> None:
        merged = {**base, **(overrides or {})}
        pairs: Sequence[tuple[str, HeaderValue]] = [
            (k, v) for k, v in merged.items() if v is not None
        ]
        json_reason = request.pop("json_reason", True)
        half_close = request.pop("half_close", False)
        raw = request_bytes(f"/webhooks/{platform}", pairs, wire, **request)
        alone = len(wire) > 256 * 1024 or merged.get("Content-Encoding") is not None
        self.cases.append(
            Case(
                f"{platform}: {name}",
                platform,
                raw,
                expect,
                delivery,
                json_reason,
                half_close,
                alone,
            )
        )

    def raw(self, name: str, platform: PlatformName, data: bytes, expect: int | None) -> None:
        """A request the HTTP parser itself refuses (its answer is plain text)."""
        self.cases.append(Case(f"{platform}: {name}", platform, data, expect, None, False))


def build_corpus(secret: str, token: str, *, limit: int = DEFAULT_LIMIT) -> list[Case]:
    """Every case, for a server with this webhook secret, GitLab token and body limit."""
    b = _Builder(secret, token)
    opened = fixture_bytes(OPENED)
    mr = fixture_bytes(MR_OPEN)
    _signatures(b, opened)
    _gitlab_tokens(b, mr)
    _header_fields(b, opened, mr)
    _shapes(b, opened, mr)
    _encodings(b, opened, mr)
    _sizes(b, opened, mr, limit)
    _bombs(b)
    _http_level(b, opened)
    for wrong in WRONG_TYPES:
        body = wrong.body()
        if wrong.platform == "github":
            b.github(f"wrong type: {wrong.label}", body, event=wrong.event, expect=400)
        else:
            b.gitlab(f"wrong type: {wrong.label}", body, event=wrong.event, expect=400)
    _controls(b, opened, mr, limit)
    return b.cases


def _signatures(b: _Builder, opened: bytes) -> None:
    digest = sign(opened, b.secret).removeprefix("sha256=")
    sha1 = hmac.new(b.secret.encode(), opened, hashlib.sha1).hexdigest()
    for name, value in [
        ("no signature header", None),
        ("empty signature", ""),
        ("sha1 in the sha256 header", "sha1=" + sha1),
        ("prefix only", "sha256="),
        ("63 hex digits", "sha256=" + digest[:63]),
        ("65 hex digits", "sha256=" + digest + "0"),
        ("not hex", "sha256=" + "z" * 64),
        ("upper-case prefix", "SHA256=" + digest),
        ("digest then junk", "sha256=" + digest + " x"),
        ("a NUL-free binary byte", b"sha256=" + digest[:63].encode() + b"\xff"),
        ("non-ASCII byte first", b"\xffsha256=" + digest.encode()),
        ("UTF-8 letter in the digest", ("sha256=" + digest[:62] + "é").encode()),
        ("Latin-1 bytes only", b"\xe9\xe9\xe9"),
        ("a very long header", "sha256=" + "a" * 8000),
        ("all zeros", "sha256=" + "0" * 64),
    ]:
        b.github(f"signature: {name}", opened, headers={"X-Hub-Signature-256": value}, expect=401)
    b.github("signed with another secret", opened, signed_as=b"x", expect=401)
    b.github(
        "body changed after signing",
        opened.replace(b"opened", b"closed", 1),
        signed_as=opened,
        expect=401,
    )
    b.github("signed over the body minus its last byte", opened, signed_as=opened[:-1], expect=401)
    b.github(
        "only the old sha1 header",
        opened,
        headers={"X-Hub-Signature-256": None, "X-Hub-Signature": "sha1=" + sha1},
        expect=401,
    )
    b.github(
        "a bomb with no signature",
        b"",
        wire=gzip_bomb(64),
        headers={"X-Hub-Signature-256": None, "Content-Encoding": "gzip"},
        expect=401,
    )


def _gitlab_tokens(b: _Builder, mr: bytes) -> None:
    for name, value in [
        ("no token", None),
        ("empty token", ""),
        ("wrong token", "not-the-token"),
        ("token with a suffix", b.token + "x"),
        ("token cut short", b.token[:-1]),
        ("token in upper case", b.token.upper()),
        ("non-ASCII byte in the token", b.token.encode() + b"\xff"),
        ("UTF-8 letter in the token", (b.token[:-1] + "é").encode()),
        ("a very long token", "t" * 8000),
    ]:
        b.gitlab(f"token: {name}", mr, headers={"X-Gitlab-Token": value}, expect=401)
    b.gitlab(
        "the GitHub signature instead of a token",
        mr,
        headers={"X-Gitlab-Token": None, "X-Hub-Signature-256": sign(mr, b.token)},
        expect=401,
    )


def _header_fields(b: _Builder, opened: bytes, mr: bytes) -> None:
    github: list[tuple[str, Headers]] = [
        ("no event header", {"X-GitHub-Event": None}),
        ("empty event header", {"X-GitHub-Event": ""}),
        ("event name with a non-ASCII byte", {"X-GitHub-Event": b"pull_request\xff"}),
        ("event name of 1000 characters", {"X-GitHub-Event": "p" * 1000}),
        ("event name with a slash", {"X-GitHub-Event": "../pull_request"}),
        ("no delivery header", {"X-GitHub-Delivery": None}),
        ("empty delivery header", {"X-GitHub-Delivery": ""}),
        ("delivery id of 256 characters", {"X-GitHub-Delivery": "d" * 256}),
        ("delivery id with a non-ASCII byte", {"X-GitHub-Delivery": b"bad-\xff"}),
        ("delivery id with a UTF-8 letter", {"X-GitHub-Delivery": "bad-é".encode()}),
        ("delivery id with a space", {"X-GitHub-Delivery": "bad delivery"}),
    ]
    for name, headers in github:
        b.github(name, opened, headers=headers, expect=400)
    gitlab: list[tuple[str, Headers]] = [
        ("no event header", {"X-Gitlab-Event": None}),
        ("empty event header", {"X-Gitlab-Event": ""}),
        ("idempotency key with a non-ASCII byte", {"Idempotency-Key": b"key-\xff"}),
        (
            "webhook UUID with a UTF-8 letter",
            {"Idempotency-Key": None, "X-Gitlab-Webhook-UUID": "uuid-é".encode()},
        ),
        ("idempotency key with a space", {"Idempotency-Key": "a key"}),
    ]
    for name, headers in gitlab:
        b.gitlab(name, mr, headers=headers, expect=400)


def _shapes(b: _Builder, opened: bytes, mr: bytes) -> None:
    shapes = [
        ("empty body", b""),
        ("whitespace only", b"  \n "),
        ("not JSON", b"action=opened"),
        ("truncated JSON", opened[: len(opened) // 2]),
        ("a JSON array", b"[1, 2, 3]"),
        ("a JSON string", b'"pull_request"'),
        ("a JSON number", b"42"),
        ("JSON null", b"null"),
        ("JSON true", b"true"),
        ("an empty object", b"{}"),
        ("nested 100 000 deep", b"[" * 100_000 + b"]" * 100_000),
        ("NaN", b'{"action": NaN}'),
        ("a lone surrogate", b'{"action": "\\ud800"}'),
        ("a raw control character in a string", b'{"action": "op\x01ened"}'),
        ("a byte-order mark", b"\xef\xbb\xbf" + opened),
        ("Latin-1 text", _latin1(opened, b"Codertocat")),
        ("UTF-16", opened.decode().encode("utf-16")),
        ("two objects", opened + opened),
        ("a huge number", b'{"number": 1' + b"0" * 5000 + b"}"),
    ]
    for name, body in shapes:
        b.github(f"shape: {name}", body, expect=400)
    for name, body in shapes[:14]:
        b.gitlab(f"shape: {name}", body, expect=400)
    b.gitlab("shape: Latin-1 text", _latin1(mr, b"MS-Viewport"), expect=400)
    form = "application/x-www-form-urlencoded"
    for name, body in [
        ("form without a payload field", b"other=1"),
        ("form with an empty payload", b"payload="),
        ("form with bad escapes", b"payload=%zz%"),
        ("form that is not a form", b"&&&"),
        ("form with non-UTF-8 bytes", b"payload=" + quote(opened.decode()).encode() + b"\xff"),
        ("form with a JSON array", b"payload=" + quote("[1]").encode()),
    ]:
        b.github(name, body, headers={"Content-Type": form}, expect=400)


def _latin1(body: bytes, word: bytes) -> bytes:
    """`body` with an é in Latin-1 (not UTF-8) inside `word`."""
    assert word in body
    return body.replace(word, word[:1] + b"\xe9" + word[1:])


def _encodings(b: _Builder, opened: bytes, mr: bytes) -> None:
    packed = gzip.compress(opened)
    codings: list[tuple[str, HeaderValue]] = [
        ("brotli", "br"),
        ("zstd", "zstd"),
        ("compress", "compress"),
        ("two codings", "gzip, gzip"),
        ("gzip then deflate", "gzip, deflate"),
        ("x-gzip", "x-gzip"),
        ("an unknown coding", "bogus"),
        ("a non-ASCII coding", "gzíp".encode()),
    ]
    for name, encoding in codings:
        b.github(
            f"encoding: {name}",
            opened,
            wire=packed,
            headers={"Content-Encoding": encoding},
            expect=415,
        )
    for name, encoding in [
        ("brotli", "br"),
        ("an unknown coding", "lz4"),
        ("two codings", "deflate, gzip"),
    ]:
        b.gitlab(
            f"encoding: {name}",
            mr,
            wire=gzip.compress(mr),
            headers={"Content-Encoding": encoding},
            expect=415,
        )
    gz = {"Content-Encoding": "gzip"}
    bad_crc = packed[:-8] + struct.pack("<I", zlib.crc32(opened) ^ 1) + packed[-4:]
    for name, wire in [
        ("gzip header then garbage", b"\x1f\x8b\x08\x00" + b"garbage" * 20),
        ("not gzip at all", opened),
        ("gzip cut in half", packed[: len(packed) // 2]),
        ("gzip with trailing garbage", packed + b"trailing"),
        ("gzip with a wrong checksum", bad_crc),
        ("an empty gzip body", b""),
    ]:
        b.github(f"encoding: {name}", opened, wire=wire, headers=gz, expect=400)
    b.github(
        "encoding: deflate that is not deflate",
        opened,
        wire=b"\x78\x9c" + b"junk" * 30,
        headers={"Content-Encoding": "deflate"},
        expect=400,
    )
    b.gitlab("encoding: gzip cut in half", mr, wire=gzip.compress(mr)[:100], headers=gz, expect=400)
    b.gitlab("encoding: not gzip at all", mr, headers=gz, expect=400)
    b.github(
        "encoding: gzip signed over the compressed bytes",
        opened,
        wire=packed,
        signed_as=packed,
        headers=gz,
        expect=401,
    )
    inner = gzip.compress(opened)
    b.github("encoding: gzip inside gzip", inner, wire=gzip.compress(inner), headers=gz, expect=400)


def _sizes(b: _Builder, opened: bytes, mr: bytes, limit: int) -> None:
    over = b'{"zen": "' + b"x" * (limit + 1 - len(b'{"zen": ""}')) + b'"}'
    assert len(over) == limit + 1
    b.github("size: one byte over the limit", over, expect=413)
    b.github("size: chunked, over the limit", over, expect=413, chunk=True)
    b.github(
        "size: a Content-Length over the limit, body not sent",
        b"",
        wire=b"{" * 1024,
        length=limit + 1,
        expect=413,
    )
    b.github(
        "size: a Content-Length of 2**62, body not sent", b"", wire=b"{", length=2**62, expect=413
    )
    b.gitlab(
        "size: a Content-Length over the limit, body not sent",
        b"",
        wire=b"{" * 1024,
        length=limit + 1,
        expect=413,
    )
    b.gitlab("size: chunked, over the limit", over, expect=413, chunk=True)
    padded = b'{"action": "opened"' + b" " * (limit + 1) + b"}"
    b.github(
        "size: gzip that inflates one byte over the limit",
        padded[: limit + 1],
        wire=gzip.compress(padded[: limit + 1]),
        headers={"Content-Encoding": "gzip"},
        expect=413,
    )
    b.gitlab(
        "size: deflate that inflates over the limit",
        padded,
        wire=zlib.compress(padded),
        headers={"Content-Encoding": "deflate"},
        expect=413,
    )
    # Bodies cut short: the server waits for the rest, then sees the connection end.
    b.github(
        "size: Content-Length larger than the body",
        opened,
        length=len(opened) + 100,
        half_close=True,
        expect=None,
    )
    b.gitlab(
        "size: Content-Length larger than the body",
        mr,
        length=len(mr) + 1,
        half_close=True,
        expect=None,
    )
    b.github(
        "size: chunked body never finished",
        opened,
        wire=b"ffff\r\n" + opened,
        length=None,
        headers={"Transfer-Encoding": "chunked"},
        half_close=True,
        expect=None,
    )


def _bombs(b: _Builder) -> None:
    bad_signature = {"X-Hub-Signature-256": "sha256=" + "0" * 64}
    bomb = gzip_bomb(2048)  # 2 MB on the wire, 2 GiB inflated
    b.github(
        "bomb: gzip, 2 GiB",
        b"",
        wire=bomb,
        headers={**bad_signature, "Content-Encoding": "gzip"},
        expect=413,
    )
    b.github(
        "bomb: gzip, 2 GiB, chunked",
        b"",
        wire=bomb,
        headers={**bad_signature, "Content-Encoding": "gzip"},
        chunk=True,
        expect=413,
    )
    b.github(
        "bomb: deflate, 1 GiB",
        b"",
        wire=zlib_bomb(1024),
        headers={**bad_signature, "Content-Encoding": "deflate"},
        expect=413,
    )
    b.github(
        "bomb: raw deflate, 1 GiB",
        b"",
        wire=_zero_blocks(1024),
        headers={**bad_signature, "Content-Encoding": "deflate"},
        expect=413,
    )
    b.gitlab(
        "bomb: gzip, 2 GiB, with the right token",
        b"",
        wire=bomb,
        headers={"Content-Encoding": "gzip"},
        expect=413,
    )
    b.gitlab(
        "bomb: deflate, 1 GiB, chunked",
        b"",
        wire=zlib_bomb(1024),
        headers={"Content-Encoding": "deflate"},
        chunk=True,
        expect=413,
    )
    b.github(
        "bomb: brotli-labelled gzip",
        b"",
        wire=bomb,
        headers={**bad_signature, "Content-Encoding": "br"},
        expect=415,
    )
    b.gitlab(
        "bomb: with a wrong token",
        b"",
        wire=bomb,
        headers={"X-Gitlab-Token": "wrong", "Content-Encoding": "gzip"},
        expect=401,
    )


def _http_level(b: _Builder, opened: bytes) -> None:
    """Requests the HTTP parser or the router refuses before any webhook code runs."""
    sig = sign(opened, b.secret)
    base = [
        ("X-GitHub-Event", "pull_request"),
        ("X-GitHub-Delivery", "http-level"),
        ("X-Hub-Signature-256", sig),
    ]
    path = "/webhooks/github"
    b.raw(
        "Content-Length not a number",
        "github",
        request_bytes(path, base, opened, length="abc"),
        400,
    )
    b.raw("negative Content-Length", "github", request_bytes(path, base, opened, length=-1), 400)
    b.raw(
        "two different Content-Lengths",
        "github",
        request_bytes(path, [*base, ("Content-Length", "3")], opened),
        400,
    )
    b.raw(
        "Content-Length and chunked",
        "github",
        request_bytes(path, [*base, ("Content-Length", str(len(opened)))], opened, chunk=True),
        400,
    )
    b.raw(
        "a header with no colon",
        "github",
        request_bytes(path, [*base, ("X-Broken", "")], opened).replace(b"X-Broken: ", b"X-Broken"),
        400,
    )
    b.raw(
        "a NUL in a header",
        "github",
        request_bytes(path, [*base, ("X-Nul", b"a\x00b")], opened),
        400,
    )
    b.raw(
        "an unknown transfer coding",
        "github",
        request_bytes(path, [*base, ("Transfer-Encoding", "gzip")], opened, length=None),
        400,
    )
    b.raw("GET on the webhook", "github", request_bytes(path, base, method="GET", length=None), 405)
    b.raw(
        "PUT on the webhook",
        "gitlab",
        request_bytes("/webhooks/gitlab", [], b"{}", method="PUT"),
        405,
    )
    b.raw("an unknown platform", "github", request_bytes("/webhooks/bitbucket", base, opened), 404)


def _controls(b: _Builder, opened: bytes, mr: bytes, limit: int) -> None:
    """Well-formed deliveries that must be accepted and stored."""
    b.github(
        "control: gzip",
        opened,
        wire=gzip.compress(opened),
        headers={"Content-Encoding": "gzip"},
        expect=202,
    )
    b.github(
        "control: GZIP in capitals",
        opened,
        wire=gzip.compress(opened),
        headers={"Content-Encoding": "GZIP"},
        expect=202,
    )
    b.github(
        "control: deflate",
        opened,
        wire=zlib.compress(opened),
        headers={"Content-Encoding": "deflate"},
        expect=202,
    )
    b.github(
        "control: raw deflate",
        opened,
        wire=raw_deflate(opened),
        headers={"Content-Encoding": "deflate"},
        expect=202,
    )
    b.github("control: identity", opened, headers={"Content-Encoding": "identity"}, expect=202)
    b.github("control: chunked", opened, chunk=True, expect=202)
    b.github(
        "control: form-encoded",
        b"payload=" + quote(opened.decode()).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        expect=202,
    )
    closed = opened.rstrip()
    at_limit = closed[:-1] + b" " * (limit - len(closed)) + b"}"
    assert len(at_limit) == limit
    b.github("control: exactly the limit", at_limit, expect=202)
    b.gitlab(
        "control: gzip",
        mr,
        wire=gzip.compress(mr),
        headers={"Content-Encoding": "gzip"},
        expect=202,
    )
    b.gitlab("control: chunked", mr, chunk=True, expect=202)


__all__ = ["AUTO", "WRONG_TYPES", "Case", "build_corpus", "gzip_bomb", "sign", "zlib_bomb"]
