"""The results page (benchmark.page): the committed one is a fresh render of the committed
records, and in a real browser (headless Chromium, after its JavaScript ran) it shows a row
for every configuration each record measured and every plot with a series for each, and
hides what its checkboxes untick. A screenshot is left in pytest's temporary folder.

A unit test (conftest.py): Chromium runs as a short command, a few seconds per page load."""

import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from benchmark.metrics import derive
from benchmark.page import PAGE, render_page, section_id
from benchmark.page_plots import CLOSED, DEFAULT_VARIANT, selection
from benchmark.report import MachineRecords, load_machines
from PIL import Image

RESULTS = (Path(__file__).resolve().parents[2] / "results").resolve()
MACHINES = load_machines(RESULTS)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
MAC_CHROME = Path("/Applications/Google Chrome.app/Contents/MacOS/Google Chrome")
WINDOW = (1280, 2400)  # the screenshot: the summary and the first machine's section
# HTML's elements without an end tag (everything else Chromium's dump closes explicitly).
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


def find_browser() -> str | None:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    return found or (str(MAC_CHROME) if MAC_CHROME.exists() else None)


def expected_tables(machines: list[MachineRecords]) -> dict[str, list[str]]:
    """Each mode's table id -> its configurations, in derive()'s order: from the records,
    not from the page."""
    return {
        f"{section_id(m, RESULTS)}-{mode}-table": list(derive(record))
        for m in machines
        for mode, record in m.measured().items()
    }


class Dom(HTMLParser):
    """What the tests look for in a page: each table's row names, each figure's SVG and the
    configurations drawn in it, the checkboxes, and every selectable element."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.stack: list[tuple[str, dict[str, str | None]]] = []
        self.rows: dict[str, list[str]] = defaultdict(list)  # table id -> row names
        self.svgs: set[str] = set()  # ids of figures holding an <svg>
        self.series: dict[str, set[tuple[str, str]]] = defaultdict(set)  # figure -> drawn
        self.checkboxes: list[str] = []
        # Where (table or plot), strategy, variant, whether hidden.
        self.selectable: list[tuple[str, str, str, bool]] = []
        self.feed(text)

    def inside(self, tag: str) -> str | None:
        """The id of the innermost open `tag`, if one is open."""
        return next((a.get("id") for t, a in reversed(self.stack) if t == tag), None)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        figure = self.inside("figure")
        if tag == "svg" and figure:
            self.svgs.add(figure)
        if tag == "input" and found.get("type") == "checkbox":
            self.checkboxes.append(found["value"] or "")
        if "data-strategy" in found:
            choice = (found["data-strategy"] or "", found["data-variant"] or "")
            hidden = "off" in (found.get("class") or "").split()
            self.selectable.append(("plot" if figure else "table", *choice, hidden))
            if figure:
                self.series[figure].add(choice)
        if tag not in VOID:
            self.stack.append((tag, found))

    def handle_endtag(self, tag: str) -> None:
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        tags = [t for t, _ in self.stack]
        if tags[-1:] == ["th"] and "tbody" in tags and (table := self.inside("table")):
            self.rows[table].append(data)


@pytest.fixture(scope="module")
def fresh_page() -> str:
    return render_page(RESULTS)


@pytest.fixture(scope="module")
def browse(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Runs the browser on the freshly rendered page (plus a #fragment) with more arguments;
    its standard output. Skips before rendering where there is no browser."""
    browser = find_browser()
    if browser is None:
        pytest.skip(
            f"no Chromium ({', '.join(BROWSERS)} on PATH, nor {MAC_CHROME}): "
            "`make setup-system` installs Debian's chromium on Linux; on macOS, install "
            "Chromium or Google Chrome"
        )
    folder = tmp_path_factory.mktemp("page")
    page = folder / PAGE
    page.write_text(request.getfixturevalue("fresh_page"))

    def run(fragment: str, *args: str) -> str:
        # NOTE: --no-sandbox: Chromium's sandbox refuses to start as root (containers, CI);
        # the page is our own. A profile of its own keeps it away from the user's.
        command = [browser, "--headless", "--no-sandbox", f"--user-data-dir={folder / 'profile'}"]
        done = subprocess.run(
            [*command, *args, page.as_uri() + fragment],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    yield run


def test_the_committed_page_is_a_fresh_render_of_the_committed_records(fresh_page):
    """Compared with the committed results/index.html rather than with itself: a record
    committed without `make report`, or a renderer change that moves a figure, fails."""
    committed = RESULTS / PAGE
    assert committed.exists(), f"{committed} missing: `make report` renders it"
    assert committed.read_text() == fresh_page, f"{committed} is stale: `make report`"


def test_every_configurations_row_and_every_plot_appear_in_chromium(browse):
    dom = Dom(browse("", "--dump-dom"))
    tables = expected_tables(MACHINES)
    assert MACHINES and tables
    for table, configs in tables.items():
        assert dom.rows[table] == configs, table
        mode_id = table.removesuffix("-table")
        for plot in ("open-loop", "throughput"):
            figure = f"{mode_id}-{plot}"
            assert figure in dom.svgs, f"no SVG in {figure}"
            assert dom.series[figure] == {selection(c) for c in configs}, figure
    every = {c for configs in tables.values() for c in configs}
    assert sorted(dom.rows["summary-table"]) == sorted(every)
    # The checkboxes exist only once the page's script ran; nothing is hidden at first.
    strategies, variants = zip(*(selection(c) for c in every), strict=True)
    assert sorted(dom.checkboxes) == sorted({*strategies, *variants})
    assert dom.selectable and not any(hidden for *_, hidden in dom.selectable)


def test_unticked_strategies_and_variants_are_hidden_in_chromium(browse):
    """#hide=… unticks boxes as a click would (the same handler): what an unticked box
    selects is hidden, in tables and plots alike, and nothing else. Unticked: the last
    table's slowest strategy, and a variant other than the default where there is one."""
    chosen = [selection(c) for configs in expected_tables(MACHINES).values() for c in configs]
    strategy = chosen[-1][0]
    variants = sorted({v for _, v in chosen if v != DEFAULT_VARIANT})[:1]
    dom = Dom(browse(f"#hide={','.join([strategy, *variants])}", "--dump-dom"))
    hidden = {(s, v) for _, s, v, off in dom.selectable if off}
    shown = {(s, v) for _, s, v, off in dom.selectable if not off}
    assert hidden and shown and not hidden & shown
    assert {place for place, *_, off in dom.selectable if off} == {"table", "plot"}
    assert all(s == strategy or v in variants for s, v in hidden)
    assert all(s != strategy and v not in variants for s, v in shown)


def test_chromium_paints_the_page_in_a_screenshot(browse, tmp_path, record_property):
    """The screenshot is kept (its path printed, and in the JUnit report): a reader of the
    test run can look at the page; it must show the plots' bars."""
    screenshot = tmp_path / "results-page.png"
    width, height = WINDOW
    browse("", "--hide-scrollbars", f"--window-size={width},{height}", f"--screenshot={screenshot}")
    record_property("screenshot", str(screenshot))
    print(f"screenshot of the results page: {screenshot}")
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(screenshot) as image:
        assert image.size == WINDOW
        colors = {color for _, color in image.convert("RGB").getcolors(width * height)}
    assert tuple(bytes.fromhex(CLOSED.removeprefix("#"))) in colors, "no throughput bar painted"
