"""More offline English text: the docstrings of Python's standard library and of scikit-learn.

An SAE needs on the order of a million tokens of ordinary text, and `steerscope.data.generic`'s
offline corpus holds about 147k Gemma 3 tokens. Every steerscope install has the standard
library's sources and scikit-learn (a pinned dependency), whose docstrings are mostly English
prose about programs: about 0.39M Gemma tokens (Python 3.11) and 0.87M (scikit-learn 1.9.1) at
`MIN_CHARS`. Files are read in sorted path order and each distinct docstring is kept once, so the
text is the same on every machine with the same Python and scikit-learn versions. Test suites are
left out (some distributions strip them).
"""

from __future__ import annotations

import ast
import importlib.util
import sysconfig
from functools import lru_cache
from pathlib import Path

MIN_CHARS = 80  # shorter docstrings are mostly one-line summaries ("Return self.")
SKIPPED_FOLDERS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test"})


def package_docstrings(root: Path, min_chars: int = MIN_CHARS) -> list[str]:
    """Distinct module, class and function docstrings of at least `min_chars` characters in the
    .py files under `root` (sorted paths; test folders and unparsable files skipped)."""
    found: dict[str, None] = {}
    for path in sorted(root.rglob("*.py")):
        if SKIPPED_FOLDERS & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                text = ast.get_docstring(node)
                if text and len(text) >= min_chars:
                    found.setdefault(text, None)
    return list(found)


@lru_cache(maxsize=1)
def python_docstrings() -> tuple[str, ...]:
    """The standard library's docstrings, then scikit-learn's (module docstring)."""
    roots = [Path(sysconfig.get_path("stdlib"))]
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin is not None:
        roots.append(Path(spec.origin).parent)
    return tuple(text for root in roots for text in package_docstrings(root))
