"""Every `steerscope ...` command in README.md and docs/*.md parses with the real command
line and passes the checks `run_experiment` makes before any work (settings, dtype, data kinds,
model names, layers), so a change that breaks a published command fails here, naming the file,
the line and the error. Nothing is loaded."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from steerscope.errors import InputError
from steerscope.published import check_command, check_published, published_commands

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# pages whose commands are many: finding fewer means the parser broke, not the page
MANY_COMMANDS = {"README.md", "results.md"}

BLOCK = """Intro with `steerscope run spare` named and `steerscope list`.

```bash
export HF_HUB_OFFLINE=1
COMMON="--set n_train=180 \\
  --set steps=[2,3,4]"
nice -n 10 steerscope run efficiency --model organism:reasoning $COMMON \\
    --out runs/x  # a comment
steerscope run NAME --out DIR [--quick]
```

```python
print("steerscope run nothing --out here")
```

Then `steerscope run smoke --model tiny:llama
--set layer=1 --out DIR` across a line break, and `steerscope run smoke --model $M --out x`.
Named in prose: `steerscope build` and `steerscope run nothing`.
"""


def test_commands_are_found_with_their_lines_variables_and_kinds():
    found = [(c.line, c.synopsis, c.inline, c.text) for c in published_commands(BLOCK)]
    assert found == [
        (1, False, True, "steerscope run spare"),
        (1, False, True, "steerscope list"),
        (
            7,
            False,
            False,
            "steerscope run efficiency --model organism:reasoning --set n_train=180 "
            "--set 'steps=[2,3,4]' --out runs/x",
        ),
        (9, True, False, "steerscope run NAME --out DIR '[--quick]'"),
        (16, False, True, "steerscope run smoke --model tiny:llama --set layer=1 --out DIR"),
        (17, False, True, "steerscope run smoke --model '$M' --out x"),
        (18, False, True, "steerscope build"),
        (18, False, True, "steerscope run nothing"),
    ]


def test_a_published_command_that_no_longer_validates_is_named_with_file_line_and_error(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(BLOCK)
    checked, problems = check_published(page)
    assert len(checked) == 7
    assert problems[:2] == [
        "page.md:7: steerscope run efficiency --model organism:reasoning --set n_train=180 --set "
        "'steps=[2,3,4]' --out runs/x: efficiency: steps must be a non-empty list of integers in "
        "[1, 3], got [2, 3, 4] (item 2 is 4)",
        "page.md:17: steerscope run smoke --model '$M' --out x: uses $M, which its code block never sets",
    ]
    # a command named in prose without its arguments must still exist
    assert len(problems) == 3 and problems[2].startswith(
        "page.md:18: steerscope run nothing: unknown experiment 'nothing'; available:"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "spare", "--quick"], "the following arguments are required: --out"),
        (["run", "spare", "--out", "x", "--set", "sae_epoch=4"], "unknown setting 'sae_epoch'"),
        (["run", "spare", "--out", "x", "--data", "tom=a.jsonl"], "spare does not take tom data"),
        (["run", "spare", "--out", "x", "--data", "facts=a.jsonl"], "facts"),
        (["run", "spare", "--out", "x", "--model", "organism:nope"], "unknown organism 'organism:nope'"),
        (["run", "spare", "--out", "x", "--dtype", "float64"], "unsupported dtype 'float64'"),
        (
            ["run", "smoke", "--out", "x", "--model", "tiny:llama", "--set", "layer=4"],
            "layer=4 is out of range",
        ),
        (
            ["run", "efficiency", "--out", "x", "--model", "organism:reasoning", "--set", "layers=[2,6]"],
            "out of range",
        ),
        (["run", "nothing", "--out", "x"], "unknown experiment 'nothing'"),
        (["build", "organism:nope"], "unknown organism"),
        (["build", "sae:L9.nothing"], "nothing"),
        (["data", "check", "a.jsonl", "--kind", "facts"], "facts"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_check_command_refuses_what_the_command_would_refuse_before_any_work(argv, message):
    with pytest.raises(InputError, match=None) as error:
        check_command(argv)
    assert message in str(error.value)


def test_check_command_accepts_valid_commands_without_loading_anything():
    check_command(
        ["run", "efficiency", "--out", "x", "--model", "organism:reasoning", "--set", "layers=[2,5]"]
    )
    check_command(["build", "sae:L8.resid_post,L9.resid_post"])
    check_command(["data", "check", "missing.jsonl", "--kind", "conflicts"])


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: p.name)
def test_every_published_command_validates(path):
    checked, problems = check_published(path)
    least = 5 if path.name in MANY_COMMANDS else 1
    assert len(checked) >= least, f"{path.name}: only {len(checked)} commands found; is the parser broken?"
    assert not problems, "published commands that no longer validate:\n" + "\n".join(problems)


ROWS = json.loads((ROOT / "docs" / "published.json").read_text())["rows"]
RESULTS = (ROOT / "docs" / "results.md").read_text()


def cited_section(row_id: str) -> str:
    """The text of results.md between the headings around the line citing `row_id`."""
    lines = RESULTS.splitlines()
    (at,) = [i for i, line in enumerate(lines) if f"Rerun row: `{row_id}`" in line]
    start = max(i for i in range(at + 1) if lines[i].startswith("#"))
    end = next((i for i in range(at + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    return "\n".join(lines[start:end])


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row["id"])
def test_every_published_row_has_a_valid_command_and_is_shown_where_results_md_cites_it(row):
    check_command(shlex.split(row["command"])[1:])
    section = cited_section(row["id"])
    missing = [c["shown"] for c in row["checks"] if "shown" in c and c["shown"] not in section]
    assert not missing, f"{row['id']}: results.md does not show {missing} where it cites the row"
    assert row["kind"] in ("quick", "long") and row["minutes"] > 0
    assert row.get("stale") or row["checks"], f"{row['id']}: a row needs checks or a reason it is stale"


def test_every_row_results_md_cites_exists():
    cited = set(re.findall(r"Rerun row: `([^`]+)`", RESULTS))
    assert cited == {row["id"] for row in ROWS}
