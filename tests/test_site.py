"""The documentation site as built: its equations render without network access, because it
loads MathJax from its own files and nothing from another host."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "docs" / "javascripts" / "mathjax"
EXTERNAL = re.compile(r"""<(script|link)\b[^>]*\b(src|href)\s*=\s*["']?(https?:)?//""", re.I)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (the docs extra: pip install -e '.[docs]')")
    if not (BUNDLE / "VERSION").is_file() and shutil.which("npm") is None:
        pytest.skip("MathJax is not bundled yet and npm, which the docs build fetches it with, is not installed")
    where = tmp_path_factory.mktemp("site")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(where)], cwd=ROOT,
                           capture_output=True, text=True, timeout=900, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr
    return where


def test_the_built_site_loads_no_script_or_stylesheet_from_another_host(site):
    pages = list(site.rglob("*.html"))
    assert len(pages) > 10
    for page in pages:
        found = [match.group(0) for match in EXTERNAL.finditer(page.read_text(encoding="utf-8"))
                 if "stylesheet" in match.group(0) or match.group(1).lower() == "script" or "preconnect" in match.group(0)]
        assert not found, f"{page.relative_to(site)}: {found}"


def test_the_pages_load_mathjax_from_the_site_with_its_fonts(site):
    concepts = (site / "concepts" / "index.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in concepts  # the page has equations for MathJax to typeset
    scripts = re.findall(r"""<script\b[^>]*\bsrc="([^"]+)\"""", concepts)
    mathjax = [src for src in scripts if src.endswith("tex-mml-chtml.js")]
    assert mathjax == ["../javascripts/mathjax/tex-mml-chtml.js"]
    assert scripts.index("../javascripts/mathjax.js") < scripts.index(mathjax[0])  # its configuration first
    assert (site / "javascripts" / "mathjax" / "tex-mml-chtml.js").stat().st_size > 500_000
    fonts = site / "javascripts" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    assert len(list(fonts.glob("MathJax_*.woff"))) > 20  # where the component looks for them: beside itself
    assert (site / "javascripts" / "mathjax" / "input" / "tex" / "extensions" / "boldsymbol.js").is_file()
    assert not (site / "hooks").exists()  # the build hook is no page


def test_a_mathjax_package_that_is_not_the_published_one_is_refused(tmp_path, monkeypatch):
    """The hook checks what npm brought against the sha512 the registry publishes."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (the docs extra: pip install -e '.[docs]')")
    from mkdocs.exceptions import PluginError

    spec = importlib.util.spec_from_file_location("mathjax_hook", ROOT / "docs" / "hooks" / "mathjax.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)

    def npm_pack(command, **_):
        into = Path(command[command.index("--pack-destination") + 1])
        (into / f"mathjax-{hook.VERSION}.tgz").write_bytes(b"not the package")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(hook.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(hook.subprocess, "run", npm_pack)
    with pytest.raises(PluginError, match=r"has sha512 sha512-\S+, not the published sha512-Bt\+SSVU8"):
        hook.bundle(tmp_path / "mathjax")
    assert not (tmp_path / "mathjax").exists()
