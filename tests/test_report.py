"""`snakemake --report` of a finished tiny run, opened in headless Chromium (Debian's `chromium`).

The landing page must say what the run did, and clicking through the report's own menu
(each category, then each result's view button) must show every figure of the run.
"""

from __future__ import annotations

import csv
import json
import re
import struct
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, snakemake
from services import INSTALL_HINT, chromium, render_page

pytestmark = pytest.mark.workflow

# Appended to a copy of the report: clicks like a user would and records what it saw.
CLICK_THROUGH = """<script>
window.addEventListener("load", () => setTimeout(async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const links = (text) => [...document.querySelectorAll("a")].filter((a) => a.textContent.trim() === text);
  const seen = [];
  try {
    for (const category of Object.keys(categories)) {
      if (!links(category).length) links("Results")[0].click();  // back from a category
      await sleep(300);
      links(category)[0].click();
      await sleep(300);
      for (const row of document.querySelectorAll("tbody tr")) {
        row.querySelector("a[iconname=eye]").click();
        await sleep(500);
        const img = [...document.querySelectorAll("img")].find((i) => i.src.startsWith("data:image/png"));
        seen.push({category, path: row.cells[0].textContent.trim(),
                   width: img ? img.naturalWidth : 0, height: img ? img.naturalHeight : 0});
      }
    }
  } catch (err) {
    seen.push({error: String(err)});
  }
  const out = document.createElement("pre");
  out.id = "click-through";
  out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
}, 500));
</script>"""


# Where the landing page's text sits: the report centres its content, so text taller than
# the window would start above the top edge, out of reach of scrolling.
MEASURE_LANDING = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const r = document.querySelector(".prose").getBoundingClientRect();
  const out = document.createElement("pre");
  out.id = "landing";
  out.textContent = JSON.stringify({top: r.top, bottom: r.bottom, window: innerHeight});
  document.body.appendChild(out);
}, 500));
</script>"""


def with_script(report: Path, script: str, name: str) -> Path:
    """A copy of the report with ``script`` appended to its body."""
    html = report.read_text()
    path = report.with_name(name)
    path.write_text(html[: html.rindex("</body>")] + script + "</body></html>")
    return path


def recorded(dom: str, element_id: str):
    return json.loads(re.search(rf'<pre id="{element_id}">(.*?)</pre>', dom, re.S).group(1))


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


@pytest.mark.parametrize("preset", [None, "cifar10.yaml", "published.yaml"])
def test_landing_page_renders_for_every_preset(preset):
    """The landing page through Jinja and docutils as `snakemake --report` does: no errors."""
    from docutils.core import publish_parts
    from jinja2 import Environment, StrictUndefined
    from snakemake.report import Category

    from multirun.config import check

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    if preset:  # as Snakemake merges a --configfile over config.yaml, then the schema fills
        config = merged(config, yaml.safe_load((ROOT / "configs" / preset).read_text()))
    config = check(config)
    snakemake_obj = type("Snakemake", (), {"config": config})
    categories = {Category(name): {} for name in ("Ensemble kernel", "Hessian")}
    links = "".join(f"\n.. _{c.name}: javascript:app.showCategory('{c.name}')\n" for c in categories)
    rst = (ROOT / "workflow" / "report" / "workflow.rst").read_text() + links
    env = Environment(trim_blocks=True, lstrip_blocks=True, undefined=StrictUndefined)
    text = env.from_string(rst).render(snakemake=snakemake_obj, categories=categories, files=[])
    html = publish_parts(text, writer="html")["html_body"]
    assert "system-message" not in html and "problematic" not in html, html
    assert ("imported the published logits" in html) == (preset == "published.yaml")
    assert ("Hessian spectra" in html) != (preset == "published.yaml")


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
    if chromium() is None:
        pytest.skip(f"chromium missing: {INSTALL_HINT}")
    workdir, cfg = tiny_run
    out = tmp_path_factory.mktemp("report")
    snakemake(workdir, "--report", str(out / "report.html"))
    return workdir, cfg, out


def test_landing_page_says_what_the_run_did(report):
    workdir, cfg, out = report
    page = with_script(out / "report.html", MEASURE_LANDING, "measure_landing.html")
    dom = render_page(page, out, screenshot=out / "landing.png", size="1400,900")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert "{{" not in text and "snakemake.config" not in text
    assert f"under {cfg['train']['seeds']} seeds (shards of {cfg['train']['shard_size']}" in text
    for phrase in ("DAG", "Figures", "accuracy_vs_models", "hessian_spectrum", "Numbers", "scores.csv"):
        assert phrase in text, phrase
    box = recorded(dom, "landing")
    assert 0 <= box["top"] < box["bottom"] <= box["window"], box  # all of it on a 900 px screen
    # the headline tables, read off the run's results (recomputed here from scores / effdim)
    results = workdir / cfg["results"]
    variant = "logsoftmax" if cfg["kernel"]["log_softmax"] else "raw"
    scores = list(csv.DictReader(open(results / "knn" / variant / "scores.csv")))
    largest = max(int(r["n_models"]) for r in scores)
    assert f"test accuracy at {largest} models" in text
    for method in ("single", "ensemble"):
        acc = [float(r["accuracy"]) for r in scores
               if r["method"] == method and int(r["n_models"]) == largest]
        assert f"{100 * sum(acc) / len(acc):.1f}% (" in text, method
    k = max(cfg["knn"]["k"])
    assert f"kernel {k}-NN, weighted vote" in text
    for r in csv.DictReader(open(results / "effdim" / "sweep-default.csv")):
        assert f"{float(r['effective_dimension']):.1f} +- " in text, r["spectrum"]


def test_every_figure_appears_in_the_browser(report):
    workdir, cfg, out = report
    page = with_script(out / "report.html", CLICK_THROUGH, "click_through.html")
    dom = render_page(page, out, screenshot=out / "last_figure.png", budget_ms=60_000)
    seen = recorded(dom, "click-through")
    assert not [s for s in seen if "error" in s], seen
    shown = {Path(s["path"]).name: (s["width"], s["height"]) for s in seen if s["path"].endswith(".png")}
    figures = sorted((workdir / cfg["results"] / "figures").glob("*.png"))
    assert len(figures) >= 10
    assert sorted(shown) == [f.name for f in figures]
    for fig in figures:  # decoded by the browser at the file's own size
        assert shown[fig.name] == png_size(fig), fig.name
    assert {"Ensemble kernel", "Hessian"} <= {s["category"] for s in seen}
