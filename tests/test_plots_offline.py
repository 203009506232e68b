"""`dvc plots diff` draws every chart in a real browser with the network off (slow).

DVC's own page loads vega, vega-lite and vega-embed from a CDN, so offline it stays blank. The
project's template (dvc_plots_template/, named by `plots.html_template` in .dvc/config) inlines
pinned copies of the three. Headless Chromium, every host name unresolvable and its proxy a closed
port, renders `dvc plots diff HEAD other` of a tiny workspace: each chart must have drawn an SVG
with data marks, and its drawn text (legends, titles) must name both revisions and its models.
DVC's default page, rendered the same way, must draw nothing: the check can fail, and the browser
really is offline. docs/offline-plots.md describes the template.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from training_helpers import TINY_PIPELINE, closed_port, dvc_in

from cifar_study.tooling.workspace import PROJECT_ROOT, commit_all, create_workspace

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next(filter(None, map(shutil.which, BROWSERS)), None)

needs_browser = pytest.mark.skipif(
    BROWSER is None,
    reason="no Chromium to render the plots in (.ci/run installs Debian's `chromium`)",
)

TEMPLATE_DIR = PROJECT_ROOT / "dvc_plots_template"
MODELS = ("resnet", "densenet")
REVS = ("HEAD", "other")
# The tiny pipeline of the DVC tests, on a quarter of the training split and without
# translate TTA: only the charts matter here, not the numbers in them.
TINY = {
    **TINY_PIPELINE,
    "train_fraction.resnet": 0.25,
    "train_fraction.densenet": 0.25,
    "tta_translate": 0,
}


def configured_template() -> str:
    """`plots.html_template` as the project's committed .dvc/config sets it."""
    return dvc_in(PROJECT_ROOT, "config", "--project", "plots.html_template").stdout.strip()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny workspace set up like the project (template and config), run, plus experiment
    `other` (lr=0.01)."""
    ws = create_workspace(tmp_path_factory.mktemp("plots") / "ws", TINY)
    assert dvc_in(ws, "config", "plots.html_template").stdout.strip() == configured_template()
    dvc_in(ws, "repro")
    commit_all(ws, "run")
    dvc_in(ws, "exp", "run", "-n", "other", "-S", "lr=0.01")
    return ws


# --------------------------------------------------------------------------- the browser


def render(page: Path, profile: Path, *extra: str) -> tuple[str, list[str]]:
    """The DOM of `page` after Chromium ran its scripts offline, and its console messages."""
    done = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            # No network: no host name resolves, and the proxy everything would go through is
            # a closed local port.
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--proxy-server=http://127.0.0.1:{closed_port()}",
            "--enable-logging=stderr",
            "--v=0",
            # Virtual time runs ahead only while the page is idle: every chart's rendering
            # finishes before the DOM is taken.
            "--virtual-time-budget=20000",
            *extra,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


@dataclass
class Chart:
    svg: bool = False  # vega's SVG renderer drew its root (<svg class="marks">)
    marks: int = 0  # shapes inside data marks (lines, bars, rects), not axes or legends
    text: list[str] = field(default_factory=list)  # every <text> the chart drew
    errors: list[str] = field(default_factory=list)  # the template's "could not be drawn"


class DrawnCharts(HTMLParser):
    """Per chart container (a DVC plot's id), what its rendering left in the DOM."""

    VOID = frozenset(
        {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"}
    )
    SHAPES = frozenset({"path", "rect", "line", "circle", "polygon", "image"})

    def __init__(self, ids: list[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.charts = {chart: Chart() for chart in ids}
        self.open: list[tuple[str, str | None, set[str]]] = []  # tag, chart id, classes

    def chart(self) -> Chart | None:
        for _, chart, _ in reversed(self.open):
            if chart is not None:
                return self.charts[chart]
        return None

    def within(self, tag: str, css_class: str | None = None) -> bool:
        return any(t == tag and (css_class is None or css_class in c) for t, _, c in self.open)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = set((attributes.get("class") or "").split())
        chart_id = attributes.get("id")
        self.see(tag, classes)
        if tag not in self.VOID:
            self.open.append((tag, chart_id if chart_id in self.charts else None, classes))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.see(tag, set((dict(attrs).get("class") or "").split()))

    def see(self, tag: str, classes: set[str]) -> None:
        chart = self.chart()
        if chart is None:
            return
        if tag == "svg" and "marks" in classes:
            chart.svg = True
        if tag in self.SHAPES and self.within("svg") and self.within("g", "role-mark"):
            chart.marks += 1

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.open) - 1, -1, -1):
            if self.open[depth][0] == tag:
                del self.open[depth:]
                return

    def handle_data(self, data: str) -> None:
        chart = self.chart()
        if chart is None or not data.strip():
            return
        if self.within("svg") and self.within("text"):
            chart.text.append(data)
        elif self.within("pre", "chart-error"):
            chart.errors.append(data)


def chart_ids(page: str) -> list[str]:
    """The id of every vega chart on a page DVC wrote: `vegaEmbed('#<id>', spec)`."""
    return re.findall(r"vegaEmbed\('#([^']+)'", page)


def drawn_charts(page: Path, profile: Path) -> tuple[dict[str, Chart], list[str]]:
    ids = chart_ids(page.read_text(encoding="utf-8"))
    assert ids, f"{page} has no vega charts"
    dom, console = render(page, profile, "--dump-dom")
    parser = DrawnCharts(ids)
    parser.feed(dom)
    return parser.charts, console


def overlays(workspace: Path) -> set[str]:
    """dvc.yaml's top-level plots that overlay several files (both models): their ids."""
    plots = yaml.safe_load((workspace / "dvc.yaml").read_text())["plots"]
    return {
        name
        for entry in plots
        for name, spec in entry.items()
        if isinstance(spec, dict) and isinstance(spec.get("y"), dict) and len(spec["y"]) > 1
    }


def problems(charts: dict[str, Chart], both_models: set[str]) -> list[str]:
    found = []
    for chart_id, chart in charts.items():
        drawn = " ".join(chart.text).lower()
        models = set(MODELS) if chart_id in both_models else {m for m in MODELS if m in chart_id}
        missing = [m for m in sorted(models) if m not in drawn]
        missing += [rev for rev in REVS if rev.lower() not in drawn]
        if chart.errors:
            found.append(f"{chart_id}: {' '.join(chart.errors)}")
        elif not chart.svg:
            found.append(f"{chart_id}: not drawn (no SVG)")
        elif not chart.marks:
            found.append(f"{chart_id}: drew axes but no data")
        elif missing:
            found.append(f"{chart_id}: drawn text lacks {missing}: {chart.text}")
    return found


# --------------------------------------------------------------------------- the tests


def test_the_template_inlines_the_pinned_builds_with_their_licences() -> None:
    """Cheap checks first: the committed template is what build.py writes from vendor.json."""
    template = TEMPLATE_DIR / "index.html"
    assert (PROJECT_ROOT / ".dvc" / configured_template()).resolve() == template.resolve()
    page = template.read_text(encoding="utf-8")
    pins = json.loads((TEMPLATE_DIR / "vendor.json").read_text())
    scripts = dict(re.findall(r'<script data-vendored="([^"]+)"[^>]*>(.*?)</script>', page, re.S))
    assert set(scripts) == {f"{name}@{pin['version']}" for name, pin in pins.items()}
    for name, pin in pins.items():
        text = scripts[f"{name}@{pin['version']}"]
        assert hashlib.sha256(text.encode("utf-8")).hexdigest() == pin["sha256"], name
        licence = (TEMPLATE_DIR / "licenses" / f"{name}.LICENSE").read_text(encoding="utf-8")
        assert "Copyright" in licence and licence.strip() in page, name
    # DVC substitutes these anywhere in the page; its scripts (the CDN's tags) must stay out.
    assert page.count("{plot_divs}") == 1 and page.count("{refresh_tag}") == 1
    assert "{scripts}" not in page
    assert not re.search(r"<script[^>]*\bsrc=", page)
    # The major versions DVC's renderer was written for (its CDN tags name them).
    from dvc_render.vega import VegaRenderer

    for name, version in re.findall(r"npm/([a-z-]+)@([\d.]+)", VegaRenderer.SCRIPTS):
        assert pins[name]["version"].split(".")[0] == version.split(".")[0], name


@pytest.mark.slow
@needs_browser
def test_plots_diff_draws_every_chart_offline_with_both_models(
    workspace: Path, tmp_path: Path
) -> None:
    output = dvc_in(workspace, "plots", "diff", "HEAD", "other").stdout
    page = workspace / "dvc_plots" / "index.html"
    assert page.resolve().as_uri() in output
    html = page.read_text(encoding="utf-8")
    assert "data-vendored=" in html and "cdn.jsdelivr" not in html, "the template was not used"
    charts, console = drawn_charts(page, tmp_path / "profile")
    both = overlays(workspace)
    assert both and both <= set(charts), (sorted(both), sorted(charts))
    found = problems(charts, both)
    assert not found, "\n".join([*found, "console:", *console])
    # No script failed, and no chart asked the network for anything.
    assert not [line for line in console if "Uncaught" in line or "ERR_" in line], console


@pytest.mark.slow
@needs_browser
def test_dvc_default_page_draws_nothing_offline(workspace: Path, tmp_path: Path) -> None:
    """The control: DVC's own page, with the CDN's script tags, is blank in the same browser."""
    from dvc_render.html import PAGE_HTML

    default = tmp_path / "dvc-default.html"
    default.write_text(PAGE_HTML, encoding="utf-8")
    dvc_in(
        workspace, "plots", "diff", "HEAD", "other", "--html-template", str(default), "-o", "cdn"
    )
    page = workspace / "cdn" / "index.html"
    assert "cdn.jsdelivr.net" in page.read_text(encoding="utf-8")
    charts, console = drawn_charts(page, tmp_path / "profile")
    assert not any(chart.svg or chart.marks or chart.text for chart in charts.values())
    assert len(problems(charts, overlays(workspace))) == len(charts)
    assert any("vegaEmbed is not defined" in line for line in console), console
