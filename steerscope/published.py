"""The `steerscope ...` commands published in Markdown (README.md, docs/*.md), found and
checked against the current command line and settings without running them, so a change that
breaks a published command fails the test suite instead of a reader.

`published_commands(text)` finds them in shell code blocks (bash, sh, shell, console or no
language) and in inline code: line continuations joined, comments dropped, the block's
`NAME=value` assignments expanded where `$NAME` is used, and whatever precedes the `steerscope`
word (environment variables, `nice -n 10`, a venv path) left out. A command holding a placeholder
(`NAME`, `[--model M]`, `KEY=VALUE`; a placeholder `--out DIR` is fine, the output folder is not
checked) is a synopsis, not checked. `check_command(argv)` parses a command with the real parser
and checks it as the command does before any work: `run` everything `runner.check_request` checks
(settings, dtype, data kinds, model name and layer settings), `build` the organism name or the SAE
sites, `data check` the kind. Inline code that names a command without its required arguments
(`steerscope run spare` in a sentence) is checked as a name: the subcommand and the experiment
must exist. Nothing is loaded or read.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from steerscope.errors import InputError

PROGRAM = "steerscope"
SHELL_LANGUAGES = ("", "bash", "sh", "shell", "console")
SEPARATORS = ("&&", "||", ";", "|")
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
_INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_PLACEHOLDER = re.compile(r"(?:^|[=:])[A-Z][A-Z_]*(?:\[.*|\.\.\.)?$")


@dataclass(frozen=True)
class PublishedCommand:
    """One `steerscope` command as published: the line it starts on, its words after expansion
    (`argv`, without the program name), whether it is a synopsis (placeholders) and whether it
    stands in inline code."""

    line: int
    argv: tuple[str, ...]
    synopsis: bool
    inline: bool
    undefined: tuple[str, ...] = ()  # $NAMEs no assignment of its block defines

    @property
    def text(self) -> str:
        return shlex.join([PROGRAM, *self.argv])


def _sections(lines: list[str]) -> Iterator[tuple[int, list[str], bool]]:
    """(first line number, lines, is a shell block) of each shell code block and of the prose
    around the blocks; other code blocks (Python, JSON) are left out."""
    prose: list[str] = []
    prose_start, index = 1, 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            prose.append(lines[index])
            index += 1
            continue
        yield prose_start, prose, False
        marker, language = fence.group(2), fence.group(3).lower()
        body, start = [], index + 2
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(marker):
            body.append(lines[index])
            index += 1
        if language in SHELL_LANGUAGES:
            yield start, body, True
        index += 1
        prose, prose_start = [], index + 1
    yield prose_start, prose, False


def _logical_lines(start: int, body: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) of a shell block's lines, backslash continuations joined."""
    pending, first = "", start
    for number, line in enumerate(body, start):
        if not pending:
            first = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield first, pending + line
        pending = ""
    if pending:
        yield first, pending


def _expand(text: str, variables: dict[str, str]) -> tuple[str, tuple[str, ...]]:
    """`text` with `$NAME` / `${NAME}` replaced by the block's values; the names left undefined."""
    undefined = []

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            undefined.append(name)
            return match.group(0)
        return variables[name]

    return _VARIABLE.sub(value, text), tuple(undefined)


def _commands_in_words(words: list[str]) -> Iterator[list[str]]:
    """The argv after each `steerscope` word of a shell line (split at `&&`, `;`, `|`)."""
    segment: list[str] = []
    for word in [*words, ";"]:
        if word not in SEPARATORS:
            segment.append(word)
            continue
        for index, candidate in enumerate(segment):
            if candidate == PROGRAM or candidate.endswith("/" + PROGRAM):
                yield segment[index + 1 :]
                break
        segment = []


def _is_synopsis(argv: Sequence[str]) -> bool:
    """A placeholder anywhere but the value of --out, an optional `[...]` or `...`."""
    for index, word in enumerate(argv):
        if index > 0 and argv[index - 1] == "--out":
            continue
        if word.startswith("[") or word == "..." or _PLACEHOLDER.search(word):
            return True
    return False


def published_commands(text: str) -> list[PublishedCommand]:
    """Every `steerscope` command and synopsis in Markdown `text`, in order."""
    found: list[PublishedCommand] = []
    for start, body, shell in _sections(text.splitlines()):
        if shell:
            variables: dict[str, str] = {}
            for number, line in _logical_lines(start, body):
                expanded, undefined = _expand(line, variables)
                try:
                    words = shlex.split(expanded, comments=True)
                except ValueError:
                    words = expanded.split()
                if words and words[0] == "export":
                    words = words[1:]
                if words and all(_ASSIGNMENT.match(word) for word in words):
                    variables.update(word.split("=", 1) for word in words)
                    continue
                for argv in _commands_in_words(words):
                    found.append(PublishedCommand(number, tuple(argv), _is_synopsis(argv), False, undefined))
            continue
        prose = "\n".join(body)
        for match in _INLINE.finditer(prose):
            code, undefined = _expand(" ".join(match.group(1).split()), {})
            try:
                words = shlex.split(code)
            except ValueError:
                words = code.split()
            number = start + prose.count("\n", 0, match.start())
            for argv in _commands_in_words(words):
                if argv:
                    found.append(PublishedCommand(number, tuple(argv), _is_synopsis(argv), True, undefined))
    return found


# ---------------------------------------------------------------- checking


def _parse(argv: Sequence[str]) -> argparse.Namespace | None:
    """`argv` parsed by the `steerscope` command's own parser: its namespace, or None when the
    parser exits cleanly (`--help`); its error message as an InputError."""
    from steerscope.cli import build_parser

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(list(argv))
    except SystemExit as exit:
        if not exit.code:
            return None
        lines = stderr.getvalue().strip().splitlines() or [f"the parser exits with {exit.code}"]
        raise InputError(lines[-1]) from None


def _check_model(model: str | None) -> None:
    from steerscope.loading import layer_count

    try:
        layer_count(model)
    except ValueError as error:
        raise InputError(str(error)) from None


def check_command(argv: Sequence[str]) -> None:
    """Check a `steerscope` command (its words after the program name) as it would be checked
    before any work (module docstring); an `InputError` says what no longer holds."""
    args = _parse(argv)
    if args is None:
        raise InputError("asks for help; runs nothing")
    if args.command == "run":
        from steerscope.cli import run_request
        from steerscope.runner import check_request

        request = run_request(args)
        check_request(
            request["name"], request["model"], request["data"], request["dtype"], request["settings"]
        )
    elif args.command == "build":
        if len(args.name) > 1 and any(name.startswith("sae:") for name in args.name):
            raise InputError("build sae:SITES takes no other name; give its sites comma-separated")
        for name in args.name:
            _check_build(name, args.model)
    elif args.command == "data":
        from steerscope.data.records import check_kind

        check_kind(args.kind)
        _check_model(args.model)
    elif args.command == "info":
        from steerscope.loading import resolve_dtype

        resolve_dtype(args.dtype)
        _check_model(args.model)


def _check_build(name: str, model: str | None) -> None:
    from steerscope.organisms import PREFIX, organism_spec
    from steerscope.sites import Site

    if name.startswith(PREFIX):
        try:
            organism_spec(name)
        except ValueError as error:
            raise InputError(str(error)) from None
        return
    if not name.startswith("sae:"):
        raise InputError(f"build takes organism:NAME or sae:SITE[,SITE...], got {name!r}")
    sites = [site for site in name.removeprefix("sae:").split(",") if site]
    if not sites:
        raise InputError(f"{name!r} names no site, e.g. sae:L9.resid_post")
    for site in sites:
        try:
            Site.parse(site)
        except ValueError as error:
            raise InputError(f"{name}: {error}") from None
    _check_model(model)


def check_named(argv: Sequence[str]) -> None:
    """Words that name a command without its arguments (`run spare`, `build`): the subcommand
    exists, and so does the experiment a `run` names."""
    try:
        _parse([*argv, "--help"])
    except InputError as error:
        raise InputError(f"names no command: {error}") from None
    if argv[0] == "run" and len(argv) > 1:
        from steerscope.runner import get_experiment

        get_experiment(argv[1])


def _check_one(command: PublishedCommand) -> None:
    if command.undefined:
        raise InputError(f"uses ${', $'.join(command.undefined)}, which its code block never sets")
    try:
        check_command(command.argv)
    except InputError as error:
        named = command.inline and not any(word.startswith("-") for word in command.argv)
        if not (named and "the following arguments are required" in str(error)):
            raise
        check_named(command.argv)


def check_published(path: str | Path) -> tuple[list[PublishedCommand], list[str]]:
    """(the commands checked, one line per problem: `file:line: command: error`) for a Markdown file."""
    path = Path(path)
    checked, problems = [], []
    for command in published_commands(path.read_text(encoding="utf-8")):
        if command.synopsis:
            continue
        try:
            _check_one(command)
        except (InputError, ValueError, TypeError, KeyError) as error:
            problems.append(f"{path.name}:{command.line}: {command.text}: {error}")
        checked.append(command)
    return checked, problems
