"""The zoo's training corpora are the same text wherever the interpreter or its virtual environment lives: a zoo
built in another checkout (a CI clone, a user's venv) trains the same models, byte for byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIGEST = (
    "import hashlib, sys; sys.path.insert(0, sys.argv[1]); from zoo.corpora import qa_corpus; "
    "from zoo.corpus import docstring_corpus; "
    "print(hashlib.sha256(repr((qa_corpus(), docstring_corpus())).encode()).hexdigest())"
)


def _digest(python: Path) -> str:
    r = subprocess.run([str(python), "-c", DIGEST, str(ROOT)], capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_the_corpora_do_not_depend_on_the_interpreters_path(tmp_path: Path) -> None:
    # The same interpreter reached through another path: sys.executable (and every default argument bound to it,
    # such as platform.architecture's) differs, and the corpora must not. The venv's python is a symlink, so a
    # second symlink elsewhere is the same environment under another name.
    other = tmp_path / "elsewhere" / "bin" / "python"
    other.parent.mkdir(parents=True)
    other.symlink_to(Path(sys.executable))
    assert _digest(Path(sys.executable)) == _digest(other)


def test_no_interpreter_path_in_the_qa_corpus() -> None:
    from zoo.corpora import qa_corpus

    text = "\n".join(q.prompt + q.answer for q in qa_corpus())
    assert len(text) > 100_000  # the corpus is there
    assert sys.executable not in text and sys.prefix not in text
