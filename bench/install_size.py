"""Disk size of the inference-only install (the ``light`` extra: onnxruntime, tokenizers, numpy, click;
and this project without its dependencies) against the full install this script runs in.

    python bench/install_size.py [--out bench/results/install_size.json]

The light environment is built in a temporary directory with pip (its cache makes this quick) and
checked by running ``tale estimate --help`` and importing ``export.runtime`` there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import click
import tomllib

REPO = Path(__file__).resolve().parents[1]
LIGHT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["light"]


def size_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6, 1)


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench/results/install_size.json"))
def main(out: Path) -> None:
    full = Path(sysconfig.get_paths()["purelib"])
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "light"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, *LIGHT], check=True)
        subprocess.run([*pip, "--no-deps", str(REPO)], check=True)
        subprocess.run([str(venv / "bin" / "tale"), "estimate", "--help"], check=True, capture_output=True)
        subprocess.run([str(python), "-c", "import sys, export.runtime; assert 'torch' not in sys.modules"],
                       check=True, cwd=tmp)
        light = site_packages(python)
        result = {"light_packages": LIGHT, "light_site_packages_mb": size_mb(light), "full_site_packages_mb": size_mb(full)}
    print(f"light (inference only): {result['light_site_packages_mb']} MB; full: {result['full_site_packages_mb']} MB")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
