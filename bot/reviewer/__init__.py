"""The reviewer core: a diff in, checked findings, a summary and the bill out.

Free of platform code (no aiohttp, gidgethub or python-gitlab): it sees the normalized types
of `platforms.base`, the LLM client and nothing else. The steps are small modules, each
tested alone: diff → filters → chunks (within budget) → prompting → findings → render;
`review.review_changes` runs them in order.

```python
result = await review_changes(llm, pr_files, ReviewOptions(path_filters=("!docs/**",)),
                              title=pr.title, description=pr.body or "")
await platform.post_review(pr, result.summary_markdown, result.comments)
```
"""

from bot.reviewer.diff import DiffError, DiffFile, from_file_changes, parse_diff
from bot.reviewer.filters import NotReviewed, filter_files
from bot.reviewer.findings import (
    CATEGORIES,
    SEVERITIES,
    Category,
    DroppedFinding,
    Finding,
    ReviewAnswer,
    Severity,
)
from bot.reviewer.prompting import PathInstruction
from bot.reviewer.review import ReviewOptions, ReviewResult, Usage, review_changes

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
