"""The docs hold together: every relative link and picture in README.md and docs/*.md
points at a file or folder of this repository (and, with #anchor into a markdown file, at
one of its headings), and every `ppo.py` command in their code blocks is accepted by
ppo.py's argument parser. Parsing only: no command is run and no file is opened."""
import contextlib
import glob
import io
import os
import re
import shlex
import urllib.parse

import pytest

import ppo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", *sorted(os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, "docs", "*.md")))]

FENCE = re.compile(r"^ {0,3}(```|~~~)")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
HTML_SOURCE = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
HTML_ANCHOR = re.compile(r"<[a-z]+\b[^>]*?\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...
SHELL_SEPARATORS = {"&", "&&", "|", "||", ";"}


def read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as file:
        return file.read()


def split_fences(text: str) -> tuple[str, list[tuple[str, str, list[str]]]]:
    """The text with its fenced code blocks blanked out, and the blocks themselves as
    (heading above the block, info string, lines)."""
    prose, blocks, block, heading = [], [], None, ""
    for line in text.splitlines():
        fence = FENCE.match(line)
        if block is None:
            if fence:
                block = (heading, line.strip()[3:].strip().lower(), [])
                prose.append("")
                continue
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            prose.append(line)
        elif fence:
            blocks.append(block)
            block = None
            prose.append("")
        else:
            block[2].append(line)
            prose.append("")
    return "\n".join(prose), blocks


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lowercased, with punctuation other
    than hyphens and underscores removed and spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(name: str) -> set[str]:
    prose, _ = split_fences(read(name))
    found: set[str] = set(HTML_ANCHOR.findall(prose))
    seen: dict[str, int] = {}
    for line in prose.splitlines():
        heading = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = github_slug(heading.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")  # repeated headings get -1, -2, ...
    return found


def link_targets(text: str) -> list[str]:
    prose, _ = split_fences(text)
    prose = re.sub(r"(`+)(?:(?!\1).)+?\1", "code", prose, flags=re.DOTALL)  # inline code is no link
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose) + HTML_SOURCE.findall(prose)


def link_problems(name: str) -> list[str]:
    problems = []
    here = os.path.dirname(os.path.join(ROOT, name))
    for target in link_targets(read(name)):
        if not target or SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        path = urllib.parse.unquote(path)
        if path.startswith("/"):
            problems.append(f"{name}: link {target!r} is absolute; write it relative to {name}")
            continue
        resolved = os.path.normpath(os.path.join(here, path)) if path else os.path.join(ROOT, name)
        if os.path.commonpath([resolved, ROOT]) != ROOT:
            problems.append(f"{name}: link {target!r} leaves the repository")
        elif not os.path.exists(resolved):
            problems.append(f"{name}: link {target!r} points at {os.path.relpath(resolved, ROOT)}, which does not exist")
        elif anchor and resolved.endswith(".md"):
            known = anchors(os.path.relpath(resolved, ROOT))
            if anchor not in known:
                problems.append(f"{name}: link {target!r}: no heading of {os.path.relpath(resolved, ROOT)} "
                                f"has the anchor #{anchor} (its anchors: {', '.join(sorted(known))})")
    return problems


def ppo_commands(text: str) -> list[tuple[str, str, list[str]]]:
    """Each ppo.py command of the text's code blocks (not those of Python code) as
    (heading above it, the line, the arguments after ppo.py). Launchers before ppo.py
    (python, torchrun, python -m cProfile, timeout, environment variables) are dropped,
    as are # comments; a line may hold several commands joined by &, &&, |, || or ;."""
    commands = []
    for heading, info, lines in split_fences(text)[1]:
        if info in ("python", "py"):
            continue
        joined = "\n".join(lines).replace("\\\n", " ")  # backslash continuations
        for line in joined.splitlines():
            if "ppo.py" not in line:
                continue
            tokens = shlex.split(line, comments=True)
            segment: list[str] = []
            for token in [*tokens, ";"]:
                if token not in SHELL_SEPARATORS:
                    segment.append(token)
                    continue
                program = next((i for i, word in enumerate(segment) if os.path.basename(word) == "ppo.py"), None)
                if program is not None:
                    commands.append((heading, line.strip(), segment[program + 1:]))
                segment = []
    return commands


def parse_problem(arguments: list[str]) -> str:
    """What ppo.py's parser says against these arguments, or '' if it accepts them."""
    errors, printed = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(printed):
            ppo.build_parser().parse_args(arguments)
    except SystemExit as stop:
        if stop.code not in (0, None):  # 0: --help printed the help and stopped
            return errors.getvalue().strip() or f"exit status {stop.code}"
    return ""


@pytest.mark.parametrize("name", DOCS)
def test_every_relative_link_and_picture_resolves(name):
    problems = link_problems(name)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_docs_have_links_to_check():
    """Guards the extraction itself: a regex that found nothing would pass every file."""
    targets = link_targets(read("README.md"))
    for expected in ("docs/pong.gif", "docs/results.md", "LICENSE"):
        assert any(target.split("#")[0] == expected for target in targets), \
            f"README.md should link {expected}; the links found were {targets}"


@pytest.mark.parametrize("name", DOCS)
def test_every_ppo_command_in_a_code_block_parses(name):
    problems = [f"{name}, under {heading!r}: {line}\n    -> {problem}"
                for heading, line, arguments in ppo_commands(read(name))
                if (problem := parse_problem(arguments))]
    assert not problems, "commands ppo.py's parser refuses:\n" + "\n".join(problems)


@pytest.mark.parametrize("section", ["Quick start", "Running it"])
def test_the_readme_sections_with_commands_have_them(section):
    commands = [line for heading, line, _ in ppo_commands(read("README.md")) if heading == section]
    assert commands, f"no `python ppo.py ...` command found in a code block under README.md's {section!r} heading"
    if section == "Running it":
        launchers = " ".join(commands)
        assert "torchrun" in launchers and "cProfile" in launchers, \
            f"the torchrun and cProfile lines of {section!r} should be parsed too; found: {commands}"


def test_a_refused_command_is_reported():
    """The parser check can fail: a misspelled flag and a bad value are refused."""
    assert parse_problem(["--env", "Pong", "--learnin-rate", "1e-3"])
    assert parse_problem(["--seed", "three"])
    assert not parse_problem(["--help"])
    assert ppo_commands("```bash\ntorchrun --nproc-per-node 2 ppo.py --env Pong  # a comment\n```\n") == \
        [("", "torchrun --nproc-per-node 2 ppo.py --env Pong  # a comment", ["--env", "Pong"])]


def test_the_readmes_map_of_part_one_follows_ppo_py():
    """Each row of the map, "| N Name | ... | first-last |", spans exactly section N of
    ppo.py: its first line is the rule above "# N. Name", the line after its last is the
    next section's rule or, after the last section of Part I, Part II's banner; and Part
    II starts at its banner."""
    source = read("ppo.py").splitlines()
    rows = re.findall(r"^\| (\d+) ([^|]+?) \| [^\n]* \| (\d+)-(\d+) \|$", read("README.md"), re.MULTILINE)
    part_two = next(number for number, line in enumerate(source, 1) if line.startswith("# PART II"))
    sections = [number for number, line in enumerate(source, 1) if re.match(r"# \d+\. ", line) and number < part_two]
    assert [int(row[0]) for row in rows] == list(range(1, len(sections) + 1)), rows
    for section, name, first, last in rows:
        first, last = int(first), int(last)
        assert source[first - 1].startswith("# ----") and source[first] == f"# {section}. {name}", (section, source[first])
        following = source[last] if last < len(source) else ""
        assert following.startswith(("# ----", "# ====")), (section, following)
    match = re.search(r"\*\*Part II, running it as a tool\*\* \(from line (\d+) to the end\)", read("README.md"))
    assert match and source[int(match[1])] == "# PART II. RUNNING IT AS A TOOL", match


def test_no_line_of_ppo_py_is_wider_than_120_characters():
    """A reader of ppo.py never scrolls sideways, in Part II as in Part I (CleanRL's widest
    line is 120 characters)."""
    wide = [number for number, line in enumerate(read("ppo.py").splitlines(), 1) if len(line) > 120]
    assert not wide, f"lines of ppo.py over 120 characters: {wide}"


def test_every_test_the_docs_name_exists():
    """docs/guarantees.md and docs/testing.md name the tests that hold each promise: each
    named test is a test function in tests/."""
    defined = set()
    for path in glob.glob(os.path.join(ROOT, "tests", "test_*.py")):
        defined |= set(re.findall(r"^def (test_\w+)\(", read(os.path.relpath(path, ROOT)), re.MULTILINE))
    named = {name for doc in ("docs/guarantees.md", "docs/testing.md") for name in re.findall(r"`(test_\w+)`", read(doc))}
    assert named, "the docs name no test"
    assert not named - defined, f"tests named in the docs that tests/ does not define: {sorted(named - defined)}"


def test_the_docs_say_no_gpu_has_run_exactly_while_tests_results_holds_no_gpu_row():
    """Until python tests/gpu_check.py has written a row in tests/results, the front page says
    that no GPU has run ppo.py; once one is there, that sentence must go."""
    gpu_rows = glob.glob(os.path.join(ROOT, "tests", "results", "gpu-check-*.csv"))
    says_none = "No GPU has run ppo.py yet" in read("README.md")
    assert says_none == (not gpu_rows), (
        f"tests/results holds {gpu_rows}: say what the GPU row shows in README.md and docs/" if gpu_rows
        else "README.md should say that no GPU has run ppo.py yet, while tests/results holds no GPU row")
