"""One model request's CPU on the event loop: Arbiter's OpenAI adapter against the SDK as it comes.

    .venv/bin/python -m bench.llm_request [--calls 500] [--rounds 3]

A review spends its worker slot's time on the one event loop it shares with every other
review (issue 20): each millisecond of CPU there is time another review waits. This starts the
fake OpenAI (tests/fakes/openai.py, answering at once, recording nothing) in a process of its
own, pinned to the last core where there are two or more, and from this process, pinned to the
first, sends `--calls` review requests each way, alternating, `--rounds` times:

- `adapter`: `OpenAIChat.call`, as a review sends it (the SDK's client on its aiohttp
  transport, its `post`);
- `create`: the SDK's `client.chat.completions.create` with the same body, on the same client
  (what `create`'s walk of the parameters costs);
- `sdk`: `create` on a client with the SDK's defaults (its httpx2 transport).

Each row prints this process's CPU per call (user + system: building the request, the HTTP
exchange, parsing the answer) and the wall time per call, with the prompt of a one-file review.
It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time
from typing import Any

from bot.core.findings import ReviewAnswer
from bot.llm.openai_chat import OpenAIChat, response_format
from bot.llm.types import Prompt
from tests.fakes.openai import FakeOpenAI, finding, review_answer

MODEL = "gpt-4o-mini"
MAX_OUTPUT = 4096


def _serve(ready: Any, stop: Any) -> None:
    """The fake OpenAI's process: its base URL on `ready`, until `stop` is set."""

    async def run() -> None:
        async with FakeOpenAI(record=False) as fake:
            fake.always(review_answer(finding("app.py", 2)))
            ready.put(fake.url)
            # The parent's stop is a process Event: waited for in a thread, not on this loop.
            await asyncio.to_thread(stop.wait)

    asyncio.run(run())


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {core})


async def _measure(calls: int, rounds: int, url: str) -> dict[str, list[tuple[float, float]]]:
    chat = OpenAIChat(api_key="sk-bench", base_url=url, timeout=30)
    prompt = Prompt(
        system="You review code changes. " * 60,
        user="=== FILE app.py (added) ===\n1 + def f(x):\n2 +     return eval(x)\n" * 4,
    )

    async def adapter() -> None:
        await chat.call(MODEL, prompt, ReviewAnswer, max_output_tokens=MAX_OUTPUT)

    from openai import AsyncOpenAI

    default = AsyncOpenAI(api_key="sk-bench", base_url=url, timeout=30, max_retries=0)

    async def create(sdk: AsyncOpenAI | None = None) -> None:
        sdk = sdk or chat._sdk()
        answer_format: Any = response_format(ReviewAnswer)
        await sdk.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": prompt.system_text},
                {"role": "user", "content": prompt.user},
            ],
            response_format=answer_format,
            max_tokens=MAX_OUTPUT,  # a compatible server's name for it, as the adapter sends
        )

    async def sdk() -> None:
        await create(default)

    ways = {"adapter": adapter, "create": create, "sdk": sdk}
    for way in ways.values():  # first use: imports, the schema, the connection
        for _ in range(20):
            await way()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(calls):
                await way()
            results[name].append(
                ((time.process_time() - cpu) / calls, (time.perf_counter() - wall) / calls)
            )
    await chat.close()
    await default.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    server = context.Process(target=_serve, args=(ready, stop), daemon=True)
    server.start()
    try:
        url = ready.get(timeout=60)
        if server.pid is not None and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(server.pid, {(os.cpu_count() or 2) - 1})
        _pin(0)
        results = asyncio.run(_measure(args.calls, args.rounds, url))
    finally:
        stop.set()
        server.join(timeout=10)
        if server.is_alive():
            server.kill()
    print(f"{args.calls} calls per round, {args.rounds} rounds, CPU of this process per call:")
    for name, rows in results.items():
        cpus = [cpu * 1000 for cpu, _ in rows]
        walls = [wall * 1000 for _, wall in rows]
        print(
            f"  {name:8} CPU {' / '.join(f'{c:.2f}' for c in cpus)} ms "
            f"(median {statistics.median(cpus):.2f}), "
            f"wall {' / '.join(f'{w:.2f}' for w in walls)} ms"
        )
    adapter = statistics.median(cpu for cpu, _ in results["adapter"])
    for name in ("create", "sdk"):
        other = statistics.median(cpu for cpu, _ in results[name])
        print(f"  the adapter saves {(other - adapter) * 1000:.2f} ms of CPU per call on {name}")


if __name__ == "__main__":
    main()
