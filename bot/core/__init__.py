"""The pure review core: a diff in, checked findings, a summary and the bill out.

Text in, findings and Markdown out: no Context, no store, no worker, no platform client, no
HTTP (tests/test_layout.py checks it). It sees the normalized types of `platforms.base`, the
vocabularies of `config/` and the LLM client, and nothing else; the use cases (bot/review/,
bot/conversation/) call it and post what it returns. The steps are small modules, each
tested alone: diff → filters → chunks (within budget) → prompting → findings → render;
`review.review_changes` runs them in order.

```python
result = await review_changes(llm, pr_files, ReviewOptions(path_filters=("!docs/**",)),
                              title=pr.title, description=pr.body or "")
await platform.post_review(pr, result.summary_markdown, result.comments)
```

Each step is imported when first named (`from bot.core import review_changes`, or its module):
a module that needs one step, `budget` say, does not load the Markdown parser and the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from config.severity import CATEGORIES, SEVERITIES, Category, Severity

if TYPE_CHECKING:
    from bot.core.diff import DiffError, DiffFile, from_file_changes, parse_diff
    from bot.core.filters import NotReviewed, filter_files
    from bot.core.findings import DroppedFinding, Finding, ReviewAnswer
    from bot.core.prompting import PathInstruction
    from bot.core.review import ReviewOptions, ReviewResult, Usage, review_changes

__all__ = [
    "CATEGORIES",
    "SEVERITIES",
    "Category",
    "DiffError",
    "DiffFile",
    "DroppedFinding",
    "Finding",
    "NotReviewed",
    "PathInstruction",
    "ReviewAnswer",
    "ReviewOptions",
    "ReviewResult",
    "Severity",
    "Usage",
    "filter_files",
    "from_file_changes",
    "parse_diff",
    "review_changes",
]

# Where each name of the package lives: imported on first use (PEP 562).
_LAZY = {
    "DiffError": "diff",
    "DiffFile": "diff",
    "from_file_changes": "diff",
    "parse_diff": "diff",
    "NotReviewed": "filters",
    "filter_files": "filters",
    "DroppedFinding": "findings",
    "Finding": "findings",
    "ReviewAnswer": "findings",
    "PathInstruction": "prompting",
    "ReviewOptions": "review",
    "ReviewResult": "review",
    "Usage": "review",
    "review_changes": "review",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"bot.core.{module}"), name)
