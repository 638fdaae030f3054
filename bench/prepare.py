"""What preparing a review costs: path filters, risk order and every line's tokens.

    .venv/bin/python -m bench.prepare [--rounds 50]

Builds diffs of added Python files (a few sizes, from two lines to 10 files of 400 lines), runs
the preparation a review runs before its first model call (`prepare_review`: the filters, the
plan with its token counts and risk order) `--rounds` times each, and prints the
median and the largest time per size, with whether the review is small enough to be prepared
on the event loop (`prepared_in_place`, issue 20) or goes to a thread.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from bot.core.diff import DiffFile, from_file_changes
from bot.core.review import ReviewOptions, prepare_review, prepared_in_place
from bot.llm import make_llm
from bot.metrics import Metrics
from config.settings import load_settings
from platforms.base import FileChange
from tests.fakes.github import PullFile

SIZES = ((1, 2), (1, 20), (1, 50), (3, 100), (5, 200), (10, 400))  # files, lines each
TITLE = "Update the README with new information."
DESCRIPTION = "This is a pretty simple change that we need to pull into master."


def _files(count: int, lines: int, rng: random.Random) -> list[DiffFile]:
    changes = []
    for i in range(count):
        body = "".join(
            f"    value_{j} = compute(value_{j - 1}, {rng.randint(0, 999)})  # step\n"
            for j in range(lines)
        )
        added = PullFile.added(f"pkg/module_{i}.py", body)
        changes.append(FileChange(path=added.filename, status="added", patch=added.patch))
    return from_file_changes(changes)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    settings = load_settings(openai_api_key="sk-bench", default_model="gpt-4o")
    llm = make_llm(settings, None, Metrics())
    options = ReviewOptions()
    rng = random.Random(20)
    print(f"{'diff':<22} {'chars':>7} {'median µs':>10} {'max µs':>8}  where")
    for count, lines in SIZES:
        files = _files(count, lines, rng)

        def prepare(files: list[DiffFile] = files) -> None:
            prepare_review(llm, files, options, title=TITLE, description=DESCRIPTION)

        prepare()  # first use: the tokenizer's encoding
        times = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            prepare()
            times.append(time.perf_counter() - started)
        chars = sum(len(ln.text) + 1 for f in files for h in f.hunks for ln in h.lines)
        where = (
            "event loop"
            if prepared_in_place(files, options, title=TITLE, description=DESCRIPTION)
            else "thread"
        )
        print(
            f"{f'{count} file(s) x {lines} lines':<22} {chars:>7} "
            f"{statistics.median(times) * 1e6:>10.0f} {max(times) * 1e6:>8.0f}  {where}"
        )


if __name__ == "__main__":
    main()
