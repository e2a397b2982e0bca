"""The app boundaries written in pyproject.toml hold (import-linter), run as part of the suite."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    completed = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "orchestration is plain Python: no Django, DRF or apps KEPT" in completed.stdout
    assert "0 broken" in completed.stdout
