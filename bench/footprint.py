"""Idle footprint: the resident memory of `arbiter serve` and `arbiter serve --no-workers`.

    .venv/bin/python -m bench.footprint [--samples 3] [--idle 5] [--fresh] [--no-modules]

Starts each command as its own process, as an operator runs it (the installed console script,
a fresh SQLite store in a temporary folder, GitHub and GitLab webhook secrets and tokens, an
OpenAI and an Anthropic key, API tokens: every feature on; the platform and model URLs point at
a closed port, so nothing leaves the machine). The store is migrated first (`arbiter migrate`),
as it is when a process restarts: the state a long-running process is in. `--fresh` starts on
a new SQLite file instead, which `serve` migrates itself, loading Alembic for the rest of its
life. Once /health/ready answers and the process has
been idle for `--idle` seconds, VmRSS and VmHWM are read from /proc/PID/status. Printed per
command: every sample in MiB, the median, the goal of issue 20 and whether the median meets it.

Then `arbiter serve` once more, against a fake GitHub and a fake OpenAI, after it has reviewed
one pull request: what a worker holds once its jobs have imported what they use (no goal).

Then, unless --no-modules: the same command once more, started through a wrapper that lists
its `sys.modules` on SIGUSR1 (tests/e2e/serve.py; the serve code itself is unchanged), to say
which heavy packages an idle process holds. This prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from collections import Counter
from pathlib import Path

from tests.e2e.serve import ProbedServeProcess, ServeProcess
from tests.e2e.world import PAT, REPO, World
from tests.fakes.github import FakeGitHub, PullFile
from tests.fakes.openai import FakeOpenAI, finding, findings_in_prompt

MIB = 1024 * 1024
# Goals of issue 20, in MB (10^6 bytes) as the issue states them.
GOALS = {(): 80e6, ("--no-workers",): 65e6}
# Packages an idle web process should not need: the model SDKs and their HTTP stack, the
# GitLab client, the review core's parsers and renderers, the CLI's terminal output.
HEAVY = (
    "openai",
    "anthropic",
    "httpx",
    "httpcore",
    "gitlab",
    "requests",
    "urllib3",
    "markdown_it",
    "jinja2",
    "rich",
    "pygments",
    "unidiff",
    "yaml",
    "bpe_openai",
    "re2",
    "jwt",
    "cryptography",
    "alembic",
    "mako",
    "pymongo",
    "redis",
    "bot.core",
    "bot.review",
    "bot.conversation",
    "bot.llm.client",
    "bot.api.models",
    "config.repo",
)


def _env(workdir: Path) -> dict[str, str]:
    closed = "http://127.0.0.1:9"  # nothing listens there: no call leaves the machine
    return {
        "ARBITER_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/footprint.db",
        "ARBITER_GITHUB_WEBHOOK_SECRET": "footprint-secret",
        "ARBITER_GITHUB_TOKEN": "ghp_footprint_not_used",
        "ARBITER_GITHUB_BASE_URL": closed,
        "ARBITER_GITLAB_WEBHOOK_TOKEN": "footprint-secret",
        "ARBITER_GITLAB_TOKEN": "glpat-footprint-not-used",
        "ARBITER_GITLAB_BASE_URL": closed,
        "OPENAI_API_KEY": "sk-footprint-not-used",
        "ARBITER_OPENAI_BASE_URL": f"{closed}/v1",
        "ANTHROPIC_API_KEY": "sk-ant-footprint-not-used",
        "ARBITER_ANTHROPIC_BASE_URL": closed,
        "ARBITER_API_TOKENS": "footprint-api-token-0123:admin",
    }


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024  # kB
    return fields


async def _sample(args: tuple[str, ...], idle: float, fresh: bool) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="arbiter-footprint-") as tmp:
        server = ServeProcess(Path(tmp), _env(Path(tmp)), args=args)
        if not fresh:
            server.migrate()
        await server.start()
        try:
            await asyncio.sleep(idle)
            assert server.process is not None
            return _status(server.process.pid)
        finally:
            server.stop()


async def _modules(
    args: tuple[str, ...], idle: float, fresh: bool
) -> tuple[set[str], dict[str, int]]:
    with tempfile.TemporaryDirectory(prefix="arbiter-footprint-") as tmp:
        server = ProbedServeProcess(Path(tmp), _env(Path(tmp)), args=args)
        if not fresh:
            server.migrate()
        await server.start()
        try:
            await asyncio.sleep(idle)
            assert server.process is not None
            status = _status(server.process.pid)
            return await server.modules(), status
        finally:
            server.stop()


async def _after_review(idle: float, fresh: bool) -> dict[str, int]:
    """`arbiter serve` after one review (fake GitHub, fake OpenAI), then `idle` seconds."""
    head, base = "a1" * 20, "c3" * 20
    code = (
        "import subprocess\n\n\ndef run(command):\n    return subprocess.run(command, shell=True)\n"
    )
    with tempfile.TemporaryDirectory(prefix="arbiter-footprint-") as tmp:
        async with FakeGitHub(token=PAT) as github, FakeOpenAI() as openai:
            github.add_repo(REPO, installation_id=1)
            github.add_pull(
                REPO, 2, files=[PullFile.added("app.py", code)], head_sha=head, base_sha=base
            )
            openai.respond(findings_in_prompt([finding("app.py", 5, title="Shell injection")]))
            world = World(Path(tmp), github, openai)
            server = world.server = ServeProcess(Path(tmp), world.env())
            if not fresh:
                server.migrate()
            await server.start()
            try:
                status, _ = await world.deliver(
                    "pull_request", world.pull_request_payload(2, "opened")
                )
                states = [state for state, _ in await world.settled(head)]
                if status != 202 or states[-1] != "success":
                    raise SystemExit(f"the review did not succeed: {status}, {states}")
                await asyncio.sleep(idle)
                assert server.process is not None
                return _status(server.process.pid)
            finally:
                world.stop()


def _heavy(modules: set[str]) -> list[str]:
    found = []
    for name in HEAVY:
        count = sum(1 for m in modules if m == name or m.startswith(name + "."))
        if count:
            found.append(f"{name} ({count})")
    return found


def _top_packages(modules: set[str], n: int) -> list[str]:
    counts = Counter(m.split(".")[0] for m in modules)
    return [f"{name} {count}" for name, count in counts.most_common(n)]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=3, help="processes per command")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before reading")
    parser.add_argument(
        "--fresh", action="store_true", help="a new store, which serve migrates (first start)"
    )
    parser.add_argument("--no-modules", action="store_true", help="skip the sys.modules listing")
    args = parser.parse_args()

    print(f"load average   {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    store = "a new SQLite file (serve migrates it)" if args.fresh else "SQLite, migrated first"
    print(f"store          {store}; {args.idle:g} s idle after /health/ready")
    print(f"{'command':<30} {'VmRSS MiB (each)':<24} {'median':>7} {'VmHWM':>7}  goal")
    for argv, goal in GOALS.items():
        samples = [await _sample(argv, args.idle, args.fresh) for _ in range(args.samples)]
        rss = [s["VmRSS"] for s in samples]
        hwm = [s["VmHWM"] for s in samples]
        median = statistics.median(rss)
        label = " ".join(("arbiter serve", *argv))
        each = ", ".join(f"{r / MIB:.1f}" for r in rss)
        verdict = "pass" if median < goal else "FAIL"
        print(
            f"{label:<30} {each:<24} {median / MIB:>7.1f} {statistics.median(hwm) / MIB:>7.1f}"
            f"  < {goal / 1e6:.0f} MB ({goal / MIB:.1f} MiB): {verdict}"
        )
    reviewed = [await _after_review(args.idle, args.fresh) for _ in range(args.samples)]
    after = [s["VmRSS"] for s in reviewed]
    each = ", ".join(f"{r / MIB:.1f}" for r in after)
    peak = statistics.median(s["VmHWM"] for s in reviewed) / MIB
    label = "arbiter serve, 1 review done"
    print(f"{label:<30} {each:<24} {statistics.median(after) / MIB:>7.1f} {peak:>7.1f}  (no goal)")
    if args.no_modules:
        return
    for argv in GOALS:
        modules, status = await _modules(argv, args.idle, args.fresh)
        label = " ".join(("arbiter serve", *argv))
        print(f"\n{label}: {len(modules)} modules at idle (VmRSS {status['VmRSS'] / MIB:.1f} MiB)")
        print(f"  heavy:   {', '.join(_heavy(modules)) or '-'}")
        print(f"  largest: {', '.join(_top_packages(modules, 12))}")


if __name__ == "__main__":
    asyncio.run(main())
