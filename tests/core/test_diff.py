from __future__ import annotations

import pytest

from bot.core.diff import DiffError, changed_lines, from_file_changes, parse_diff
from platforms.base import FileChange
from tests.core.conftest import file_diff, patch_of

GIT_DIFF = """\
diff --git a/src/app.py b/src/app.py
index 1111111..2222222 100644
--- a/src/app.py
+++ b/src/app.py
@@ -1,5 +1,6 @@ def main():
 one
-two
+TWO
+two and a half
 three
 four
 five
@@ -20,3 +21,3 @@ class Later:
 twenty
-twenty-one
+21
 twenty-two
diff --git a/logo.png b/logo.png
new file mode 100644
index 0000000..3333333
Binary files /dev/null and b/logo.png differ
diff --git a/old/name.py b/new/name.py
similarity index 95%
rename from old/name.py
rename to new/name.py
index 4444444..5555555 100644
--- a/old/name.py
+++ b/new/name.py
@@ -1,2 +1,2 @@
-a = 1
+a = 2
 b = 3
diff --git a/gone.py b/gone.py
deleted file mode 100644
index 6666666..0000000
--- a/gone.py
+++ /dev/null
@@ -1,2 +0,0 @@
-x = 1
-y = 2
"""


def test_git_diff_files_statuses_and_paths() -> None:
    files = {f.path: f for f in parse_diff(GIT_DIFF)}
    assert list(files) == ["src/app.py", "logo.png", "new/name.py", "gone.py"]
    assert files["src/app.py"].status == "modified"
    assert files["logo.png"].status == "added" and files["logo.png"].binary
    assert files["new/name.py"].status == "renamed"
    assert files["new/name.py"].previous_path == "old/name.py"
    assert files["gone.py"].status == "removed"


def test_new_side_line_numbers() -> None:
    app = parse_diff(GIT_DIFF)[0]
    first, second = app.hunks
    assert (first.new_start, first.new_length, first.header) == (1, 6, "def main():")
    assert [(ln.kind, ln.new, ln.old, ln.text) for ln in first.lines[:4]] == [
        (" ", 1, 1, "one"),
        ("-", None, 2, "two"),
        ("+", 2, None, "TWO"),
        ("+", 3, None, "two and a half"),
    ]
    # Added and context lines are the lines a finding may cite; removed ones are not.
    assert app.new_lines[2] == "TWO"
    assert app.new_lines[22] == "21"
    assert set(app.new_lines) == {1, 2, 3, 4, 5, 6, 21, 22, 23}
    assert (app.additions, app.deletions) == (3, 2)
    assert app.hunk_of(22) is second
    assert app.hunk_of(10) is None


def test_platform_patches_parse_like_a_diff() -> None:
    change = FileChange(
        path="src/app.py",
        status="modified",
        patch="@@ -1,3 +1,4 @@\n one\n-two\n+TWO\n+extra\n three",  # no final newline
    )
    binary = FileChange(path="a.png", status="added", patch=None, binary=True)
    withheld = FileChange(path="huge.sql", status="modified", patch=None)
    rename_only = FileChange(path="b.py", status="renamed", patch="", previous_path="a.py")
    broken = FileChange(path="bad.py", status="modified", patch="@@ -1,5 +1,5 @@\n only one\n")
    files = from_file_changes([change, binary, withheld, rename_only, broken])
    assert files[0].new_lines == {1: "one", 2: "TWO", 3: "extra", 4: "three"}
    assert files[1].binary and not files[1].hunks
    assert files[2].too_large
    assert files[3].previous_path == "a.py" and not files[3].hunks
    assert files[4].parse_error and "shorter" in files[4].parse_error
    assert changed_lines(files) == 3


def test_garbage_is_refused_with_a_reason() -> None:
    with pytest.raises(DiffError, match="no file changes"):
        parse_diff("this is not a diff\n")
    assert parse_diff("") == []


def test_helper_diffs_round_trip() -> None:
    text = patch_of(
        {"a.py": ("x\ny\n", "x\nY\n"), "new.py": (None, "n\n"), "old.py": ("o\n", None)}
    )
    files = {f.path: f for f in parse_diff(text)}
    assert files["a.py"].new_lines == {1: "x", 2: "Y"}
    assert files["new.py"].status == "added"
    assert files["old.py"].status == "removed"
    assert file_diff("q.py", "a\n", "a\n") == "diff --git a/q.py b/q.py\n"
