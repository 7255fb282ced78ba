"""The student edition: the public tree students open on Binder, with nothing secret in it.

A public repository hides nothing, so the student edition holds only what students need: the
released notebooks, the helper package and the environment. No source/, no solutions/, no
grading code, no hidden tests.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from course_admin.paths import ROOT

# What the student edition is made of, relative to the repository root.
INCLUDED = (
    "release",
    "optlab",
    "binder",
    "pyproject.toml",
    "requirements.txt",
    "environment.yml",
)

README = """# How neural networks are optimized: student edition

Eight weeks of notebooks in which you write the optimizers yourself, from SGD to Muon.

Open it on Binder, nothing to install:
[![Binder](https://mybinder.org/badge_logo.svg)]({binder_url})

Or on your own machine, with Python 3.11:

```bash
python3 -m venv .venv && . .venv/bin/activate
pip install -r requirements.txt && pip install --no-deps -e .
jupyter lab release/week01_sgd/week01_sgd.ipynb
```

(`pip install -r requirements.txt` takes the full torch wheel on Linux; add
`--extra-index-url https://download.pytorch.org/whl/cpu` for the much smaller CPU-only one.)

Each week's folder in `release/` holds the notebook and a `pair_guide.md` for working in pairs.
Fill in the cells marked `# YOUR CODE HERE`, run the checks under them, and hand in the
notebook as your course says.
"""


def binder_url(repo: str, ref: str = "HEAD") -> str:
    """The Binder link that opens JupyterLab at Week 1 for GitHub repository ``repo``."""
    return (
        f"https://mybinder.org/v2/gh/{repo}/{ref}"
        "?urlpath=lab/tree/release/week01_sgd/week01_sgd.ipynb"
    )


def write_student_edition(target: Path, repo: str, root: Path = ROOT) -> list[Path]:
    """Write the student edition into ``target`` (which must not exist yet); its files."""
    if target.exists():
        raise SystemExit(f"course: {target} already exists; give a new folder")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints")
    target.mkdir(parents=True)
    for name in INCLUDED:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    (target / "README.md").write_text(README.format(binder_url=binder_url(repo)))
    (target / ".gitignore").write_text(".venv/\n__pycache__/\n*.egg-info/\n.ipynb_checkpoints/\n")
    return sorted(p for p in target.rglob("*") if p.is_file())
