"""MkDocs hook: MathJax bundled with the site, so that its equations render without network access.

The npm package ``mathjax`` (the version pinned below, checked against the sha512 the registry
publishes for it) is fetched once with ``npm pack`` into ``docs/javascripts/mathjax/``, which
git ignores; MkDocs then copies it into the site like any other file, and the pages load it
from there, never from a CDN. Only ``npm`` and the npm registry are needed, once.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from mkdocs.exceptions import PluginError

VERSION = "3.2.2"
INTEGRITY = "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
# What the pages use: the TeX-to-HTML component, the fonts it loads from beside itself, the TeX
# extensions and accessibility parts it loads on demand, and the licence.
KEPT = ("es5/tex-mml-chtml.js", "es5/output/chtml/", "es5/input/", "es5/a11y/", "es5/sre/", "es5/ui/",
        "es5/adaptors/", "LICENSE")


def on_config(config):
    folder = Path(config["docs_dir"]) / "javascripts" / "mathjax"
    stamp = folder / "VERSION"
    if not (stamp.is_file() and stamp.read_text().strip() == VERSION):
        bundle(folder)
    return config


def fetch(into: Path) -> Path:
    """The package's tarball, downloaded by npm into ``into`` and checked."""
    if shutil.which("npm") is None:
        raise PluginError(f"MathJax {VERSION} is not bundled yet ({into}) and npm is not installed: install npm "
                          "(it fetches the package once), then build again")
    done = subprocess.run(["npm", "pack", f"mathjax@{VERSION}", "--pack-destination", str(into), "--silent"],
                          capture_output=True, text=True, timeout=600)
    tarball = into / f"mathjax-{VERSION}.tgz"
    if done.returncode != 0 or not tarball.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PluginError(f"cannot fetch MathJax {VERSION} with npm: {last}")
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != INTEGRITY:
        raise PluginError(f"the npm package mathjax@{VERSION} has sha512 {digest}, not the published {INTEGRITY}")
    return tarball


def bundle(folder: Path) -> None:
    """Fetch the package and put the parts the pages use in ``folder`` (replaced whole, at once)."""
    with tempfile.TemporaryDirectory() as scratch:
        tarball = fetch(Path(scratch))
        staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        with tarfile.open(tarball) as archive:
            for member in archive.getmembers():
                name = member.name.removeprefix("package/")
                if not member.isfile() or ".." in Path(name).parts or not name.startswith(KEPT):
                    continue
                target = staging / name.removeprefix("es5/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(member).read())
        (staging / "VERSION").write_text(VERSION + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
