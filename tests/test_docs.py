"""The documentation site in docs/: it builds with warnings as errors, its API reference covers
the public core, and its pages render in a real browser with the notebooks' pictures.

The build (conftest's ``docs_build``, once per session) executes the notebooks; the browser is
Debian's Chromium (/usr/bin/chromium, which .ci/run installs) driven by Python playwright, offline:
the built site is served on 127.0.0.1 and every request elsewhere is refused (only MathJax may
come from its CDN). Under
CI a missing browser or playwright fails; elsewhere it skips with the line that installs it.
"""

import functools
import http.server
import os
import pathlib
import re
import subprocess
import sys
import threading

import pytest

from conftest import REPO

nbformat = pytest.importorskip("nbformat")

DOCS = REPO / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
import plain_docstrings  # noqa: E402  pylint: disable=wrong-import-position

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MATHJAX_CDN = "https://cdn.jsdelivr.net/npm/mathjax@"
NOTEBOOKS = sorted(path.stem for path in (REPO / "notebooks").glob("*.ipynb"))


# ---------------------------------------------------------------------------------------------
# Fast: the sources of the site.

def test_api_reference_documents_every_public_name():
    import vae_jax  # pylint: disable=import-outside-toplevel

    core = (DOCS / "api" / "core.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. auto(?:function|class|exception):: vae_jax\.(\w+)$", core,
                                re.MULTILINE))
    assert documented == set(vae_jax.__all__)


def test_generated_and_built_files_are_ignored_by_git():
    paths = ["docs/_build/html/index.html", "docs/_generated/config_fields.md",
             "docs/notebooks/quickstart.ipynb", "docs/jupyter_execute/notebooks/x.ipynb"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert result.stdout.split() == paths
    tracked = subprocess.run(["git", "check-ignore", "--no-index", "docs/conf.py",
                              "docs/images/colab-badge.svg"], cwd=REPO, capture_output=True,
                             text=True, check=False)
    assert tracked.stdout == ""


@pytest.mark.parametrize("line, expected", [
    ("shape (B, *input_shape), *emphasis* and **strong**",
     r"shape (B, \*input_shape), *emphasis* and **strong**"),
    ("log(1 + exp(−|ℓ|)) and train_* metrics", r"log(1 + exp(−\|ℓ\|)) and train\_\* metrics"),
    ("`RatePoint`s and ``x``s, `a*b` kept", r"`RatePoint`\ s and ``x``\ s, `a*b` kept"),
    ("__init__ and x_1 unchanged", "__init__ and x_1 unchanged"),
])
def test_plain_docstrings_escapes_stray_markup(line, expected):
    assert plain_docstrings.escape_inline(line) == expected


def test_plain_docstrings_makes_indented_blocks_and_tables_literal():
    lines = ["The bound:", "", "    log p(x) ≥ ELBO", "        continued", "", "After.", "",
             "| a | b |", "| 1 | 2 |", "", "Args:", "  x: one *example.", "", "Example::", "",
             "    f(*args)", "", "- a list item", "", "    its continuation"]
    assert plain_docstrings.rewrite(lines) == [
        "The bound:", "", "::", "", "    log p(x) ≥ ELBO", "        continued", "", "After.", "",
        "::", "", "    | a | b |", "    | 1 | 2 |", "", "Args:", r"  x: one \*example.", "",
        "Example::", "", "    f(*args)", "", "- a list item", "", "    its continuation"]


# ---------------------------------------------------------------------------------------------
# Slow: the built site.

@pytest.mark.slow
def test_site_builds_with_every_page(docs_build):
    html = docs_build / "html"
    for page in ["index", "getting_started", "objectives", "cli", "results", "api/core",
                 "api/app", "notebooks/index", *(f"notebooks/{name}" for name in NOTEBOOKS)]:
        assert (html / f"{page}.html").exists(), page
    cli = (html / "cli.html").read_text(encoding="utf-8")
    # The config reference is generated from configs.field_table(), --help from the scripts.
    from vae_jax.app import configs  # pylint: disable=import-outside-toplevel

    for field in configs.get_default():
        assert f"<code class=\"docutils literal notranslate\"><span class=\"pre\">{field}</span>" \
            in cli, field
    assert "--config.latent_dim" in cli
    core = (html / "api" / "core.html").read_text(encoding="utf-8")
    assert 'id="vae_jax.batch_elbo"' in core and 'id="vae_jax.iwae.iwae_objective"' in core
    results = (html / "results.html").read_text(encoding="utf-8")
    assert "85.48" in results  # the README's Results table, included


def _browser():
    """A playwright Chromium (Debian's), or a skip (a failure under CI) saying what to install."""
    try:
        from playwright.sync_api import sync_playwright  # pylint: disable=import-outside-toplevel
    except ImportError:
        sync_playwright = None
    missing = []
    if sync_playwright is None:
        missing.append("playwright (pip install -e '.[dev]')")
    if not os.path.exists(CHROMIUM):
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set: the browser test must run)")
        pytest.skip(message)
    return sync_playwright


@pytest.fixture(scope="module", name="site")
def fixture_site(docs_build):
    """The built site served on 127.0.0.1: its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(docs_build / "html"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass


_IMAGES = """async () => {
  const images = Array.from(document.images);
  for (const image of images) image.loading = "eager";
  await Promise.all(images.map(image => image.decode().catch(() => null)));
  return images.map(image => ({src: image.currentSrc || image.src, complete: image.complete,
                               width: image.naturalWidth,
                               output: image.closest(".cell_output") !== null}));
}"""


def _image_outputs(docs_build: pathlib.Path, name: str) -> int:
    executed = nbformat.read(str(docs_build / "jupyter_execute" / "notebooks" / f"{name}.ipynb"),
                             as_version=4)
    return sum(1 for cell in executed.cells if cell.cell_type == "code"
               for output in cell.outputs
               if "data" in output and any(kind.startswith("image/") for kind in output.data))


@pytest.mark.slow
def test_pages_render_their_pictures_in_a_headless_browser(docs_build, site):
    sync_playwright = _browser()
    refused = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page()

            def offline(route):
                if route.request.url.startswith(site):
                    route.continue_()
                else:
                    refused.append(route.request.url)
                    route.abort()

            page.route("**/*", offline)
            pictures = {}
            for name in ["index", "notebooks/index", *(f"notebooks/{nb}" for nb in NOTEBOOKS)]:
                response = page.goto(site + f"{name}.html", wait_until="load")
                assert response is not None and response.ok, name
                images = page.evaluate(_IMAGES)
                broken = [image["src"] for image in images
                          if not (image["complete"] and image["width"] > 0)]
                assert not broken, f"{name}: pictures that did not render: {broken}"
                pictures[name] = [image for image in images if image["output"]]
            title = page.title()
        finally:
            browser.close()
    # MathJax comes from its CDN (Sphinx's default: formulas render where there is a network);
    # everything else, pictures, styles and fonts included, is the site's own.
    outside = [url for url in refused if not url.startswith(MATHJAX_CDN)]
    assert not outside, f"the pages asked for files outside the site: {outside}"
    assert "vae_jax" in title
    # The quickstart shows its pictures, and every notebook page shows each picture it drew.
    assert pictures["notebooks/quickstart"], "the quickstart page shows no output picture"
    for name in NOTEBOOKS:
        shown, drawn = len(pictures[f"notebooks/{name}"]), _image_outputs(docs_build, name)
        assert shown == drawn, f"{name}: {shown} pictures on the page, {drawn} in the notebook"
    assert all(pictures[f"notebooks/{name}"] for name in NOTEBOOKS if name != "kl_divergence"), \
        "a notebook that draws pictures shows none"
