"""Sphinx configuration of the vae_jax documentation site (Sphinx + MyST-NB + sphinx-book-theme).

Build (from the repository root; warnings are errors, as in CI)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Before Sphinx reads any page, this file

- copies ``notebooks/*.ipynb`` to ``docs/notebooks/`` (git-ignored): Sphinx reads only files
  under ``docs/``, and the notebooks stay committed once, without outputs, in ``notebooks/``.
  The copies point their Colab badge at a local picture (the page must render offline);
- writes ``docs/_generated/`` (git-ignored): the config field table from
  `vae_jax.app.configs.field_table` (the one source of the README table and of ``--help``), and
  the ``--help`` text of every script;
- sets defaults for the notebooks' environment: ``VAE_JAX_QUICK=1`` (a quick run, minutes in all),
  ``VAE_JAX_MANUAL_DIR`` (the original MNIST files, ``../shared/data/mnist`` beside the
  repository or ``$VAE_JAX_SHARED_DATA/mnist``) and ``VAE_JAX_DATA_DIR`` (a TFDS folder in
  ``docs/_build/tfds``). Variables already set win.

MyST-NB executes every notebook at build time (``nb_execution_mode = "force"``; set
``VAE_JAX_DOCS_EXECUTE=cache`` to reuse unchanged notebooks' outputs across builds, or ``off`` to
skip execution while editing prose). A notebook that raises fails the build. The executed
notebooks are written to ``<outdir>/../jupyter_execute/notebooks/`` (``tests/test_notebooks.py``
checks them there).
"""

import concurrent.futures
import os
import pathlib
import shutil
import subprocess
import sys

from sphinx.util import logging

DOCS = pathlib.Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(DOCS / "_ext"))

logger = logging.getLogger("vae_jax.docs")

# ---------------------------------------------------------------------------------------------
# The notebooks' environment (what tests/test_notebooks.py used to set for nbclient).

os.environ.setdefault("VAE_JAX_QUICK", "1")
_SHARED_DATA = pathlib.Path(os.environ.get("VAE_JAX_SHARED_DATA", REPO.parent / "shared" / "data"))
if (_SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").exists():
    os.environ.setdefault("VAE_JAX_MANUAL_DIR", str(_SHARED_DATA / "mnist"))
os.environ.setdefault("VAE_JAX_DATA_DIR", str(DOCS / "_build" / "tfds"))
# The python3 kernel runs `python` from PATH: make it this environment's.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
# TFDS progress bars are escape codes in a rendered page.
os.environ.setdefault("TFDS_DISABLE_PROGRESS_BARS", "1")


def _write_if_changed(path: pathlib.Path, text: str) -> None:
    """Writes `text` to `path` unless it already holds it (Sphinx rebuilds what changed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# The notebooks, copied into the source tree.

COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
LOCAL_BADGE = "../images/colab-badge.svg"  # relative to docs/notebooks/


def copy_notebooks() -> list[str]:
    """Copies notebooks/*.ipynb to docs/notebooks/ (badge picture made local); returns the stems.

    Copies of notebooks that no longer exist are removed, so the site shows exactly the
    committed notebooks.
    """
    target = DOCS / "notebooks"
    target.mkdir(exist_ok=True)
    sources = sorted((REPO / "notebooks").glob("*.ipynb"))
    names = {path.name for path in sources}
    for stale in target.glob("*.ipynb"):
        if stale.name not in names:
            stale.unlink()
    for path in sources:
        _write_if_changed(target / path.name,
                          path.read_text(encoding="utf-8").replace(COLAB_BADGE, LOCAL_BADGE))
    return [path.stem for path in sources]


def write_notebook_index(stems: list[str]) -> None:
    """docs/notebooks/index.md: the notebooks' toctree and this build's execution times."""
    _write_if_changed(DOCS / "notebooks" / "index.md", "\n".join([
        "# Notebooks",
        "",
        "The notebooks of `notebooks/`, executed when this site was built, in quick mode",
        "(`VAE_JAX_QUICK=1`: fewer epochs and examples than a full run, so the pictures are",
        "rougher). Each opens in Colab from its badge; run it there, or locally from the",
        "repository, for the full version.",
        "",
        "```{toctree}",
        ":maxdepth: 1",
        "",
        *stems,
        "```",
        "",
        "Execution times of this build:",
        "",
        "```{nb-exec-table}",
        "```",
        "",
    ]))

# ---------------------------------------------------------------------------------------------
# Generated reference pages: the config fields and each script's --help.

GENERATED = DOCS / "_generated"
SCRIPTS = ["train", "sweep", "evaluate", "visualize", "benchmark"]


def write_config_table() -> None:
    """docs/_generated/config_fields.md: `vae_jax.app.configs.field_table()`, the one source."""
    try:
        from vae_jax.app.configs import field_table  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        logger.warning("cannot generate the config reference: %s (vae_jax.app.configs must "
                       "define field_table())", error)
        text = "*The config field table could not be generated (see the build's warnings).*\n"
    else:
        text = field_table().rstrip("\n") + "\n"
    _write_if_changed(GENERATED / "config_fields.md", text)


def _script_help(name: str) -> tuple[str, subprocess.CompletedProcess]:
    env = dict(os.environ, COLUMNS="100", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, str(REPO / "scripts" / f"{name}.py"), "--help"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    return name, result


def write_script_help() -> None:
    """docs/_generated/help_SCRIPT.txt: each script's ``--help`` text (run in parallel).

    A script whose ``--help`` does not exit 0 gives a build warning (an error under -W).
    """
    with concurrent.futures.ThreadPoolExecutor(len(SCRIPTS)) as pool:
        results = list(pool.map(_script_help, SCRIPTS))
    for name, result in results:
        if result.returncode != 0:
            logger.warning("`python scripts/%s.py --help` exited with status %d: %s", name,
                           result.returncode, result.stderr.strip().splitlines()[-1:])
        text = (result.stdout + result.stderr).strip()
        _write_if_changed(GENERATED / f"help_{name}.txt", text.replace(str(REPO) + "/", "") + "\n")


# ---------------------------------------------------------------------------------------------
# Sphinx.

project = "vae_jax"
author = "the vae_jax authors"
copyright = "the vae_jax authors"  # pylint: disable=redefined-builtin
try:
    import vae_jax  # pylint: disable=wrong-import-position

    release = version = vae_jax.__version__
except ImportError:  # pragma: no cover - the build needs the package; autodoc says so too
    release = version = "unknown"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "plain_docstrings",  # docs/_ext: the docstrings' plain-text blocks and symbols, read as meant
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints",
                    "_generated/*.md"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
# The README's sections are included into pages under titles of their own, so their `###`
# headings follow a page's `#` title.
suppress_warnings = ["myst.header"]

# Docstrings: Google style (Args/Returns/Raises); `name` is a reference to a Python object
# where one exists, else code.
default_role = "py:obj"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # a NamedTuple's Attributes: fields, not a second entry per field
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": False}
autosummary_generate = False

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# Notebooks: executed at build time; an error fails the build.
nb_execution_mode = os.environ.get("VAE_JAX_DOCS_EXECUTE", "force")
nb_execution_timeout = 1800
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_in_temp = False  # cwd = docs/notebooks/, inside the repository (as notebooks/)
nb_merge_streams = True
nb_kernel_rgx_aliases = {".*": "python3"}

html_theme = "sphinx_book_theme"
html_title = f"vae_jax {release}"
html_static_path = []
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
}



def _generate(app) -> None:  # pylint: disable=unused-argument
    write_notebook_index(copy_notebooks())
    write_config_table()
    write_script_help()


def _skip_field_aliases(app, what, name, obj, skip, options):  # pylint: disable=unused-argument
    """A NamedTuple's fields are described by its docstring, not once more as "Alias for field
    number N" entries."""
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return None


def setup(app):
    """Generates the copied notebooks and reference pages once the builder exists (before
    Sphinx looks for source files), so that their warnings count under -W."""
    app.connect("builder-inited", _generate)
    app.connect("autodoc-skip-member", _skip_field_aliases)
    return {"parallel_read_safe": True}
