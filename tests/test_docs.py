"""The documentation against the repository: every relative link of every page resolves (the
file exists; an anchor is a heading of the page it points into), and every `make` target a
page names is one the Makefile has."""

import re
import shlex
from pathlib import Path

import pytest

# Files only, no process: the quick tier (conftest.py would give it anyway; said here since
# nothing else in the module shows it).
pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
STRATEGY_FOLDERS = sorted(p.parent for p in ROOT.glob("*/strategy.toml"))
PAGES = sorted(
    {
        ROOT / "README.md",
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("contract/*.md"),
        *ROOT.glob("images/*.md"),
        *(page for folder in STRATEGY_FOLDERS for page in folder.glob("*.md")),
    }
)

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]+`")
# [text](target) and ![alt](target); a target has no spaces (none here has).
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
MAKE_TARGET = re.compile(r"^([A-Za-z0-9_.-]+(?:[ \t]+[A-Za-z0-9_.-]+)*)[ \t]*::?(?!=)", re.M)


def prose(text: str) -> str:
    """The page without its code: a link or heading inside code is not one."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text without Markdown, lower case, punctuation
    dropped (hyphens and underscores kept), spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor; a repeated heading's gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(page.read_text()))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def makefile_targets() -> set[str]:
    """The Makefile's targets and those of the strategy.mk files it includes."""
    targets: set[str] = set()
    for makefile in [ROOT / "Makefile", *ROOT.glob("*/strategy.mk")]:
        for names in MAKE_TARGET.findall(makefile.read_text()):
            targets.update(names.split())
    return targets - {".PHONY"}


def make_commands(text: str) -> list[str]:
    """What follows `make` in the page's code: inline code spans, and the lines of code
    blocks that run make."""
    commands = [span[6:-1] for span in INLINE_CODE.findall(text) if span.startswith("`make ")]
    for block in FENCE.finditer(text):
        commands += re.findall(r"^\s*make[ \t]+(.*)$", block.group(0), re.M)
    return commands


def named_targets(command: str) -> list[str]:
    """The targets of one make command line: its words up to the first that is not a target
    or a VAR=value argument (`&&`, a comment, another command)."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote: the words before it are enough
        words = command.split()
    targets = []
    for word in words:
        if "=" in word:
            continue
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", word):
            break
        targets.append(word)
    return targets


def page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def test_the_pages_are_found():
    names = {page_id(page) for page in PAGES}
    assert {"README.md", "docs/results.md", "contract/README.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor in {page_id(linked)}")
    assert not broken, broken


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_make_target_named_exists(page):
    targets = makefile_targets()
    named = {t for command in make_commands(page.read_text()) for t in named_targets(command)}
    assert named - targets == set(), f"not targets of the Makefile: {sorted(named - targets)}"


def test_the_checks_themselves():
    """The slug and target rules on the cases the pages rely on."""
    assert slug("The model's contract: `metadata.json`") == "the-models-contract-metadatajson"
    assert slug("Intel(R) Xeon(R) Processor, 2 cores, linux x86_64, resnet50") == (
        "intelr-xeonr-processor-2-cores-linux-x86_64-resnet50"
    )
    assert slug("Containers: `make bench-compose`") == "containers-make-bench-compose"
    assert named_targets('bench BENCH_ARGS="--services a,b" SHORT=1') == ["bench"]
    assert named_targets("setup export") == ["setup", "export"]
    assert named_targets("payloads && ab -n 40000") == ["payloads"]
    assert named_targets("render    # the workspace members") == ["render"]
    assert {"bench", "test", "up", "readme"} <= makefile_targets()


def test_every_docs_page_is_linked_from_the_readme():
    """The README is the front door: no page under docs/ that a reader cannot reach from it."""
    linked = {
        (ROOT / target.partition("#")[0]).resolve() for target in relative_links(ROOT / "README.md")
    }
    unlinked = [page_id(page) for page in ROOT.glob("docs/*.md") if page.resolve() not in linked]
    assert not unlinked, unlinked
