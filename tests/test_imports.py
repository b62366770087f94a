"""What importing a package pulls in: reading run files and datasets must not need torch.

``kedit report`` and ``kedit data check`` run where no model is loaded (a laptop reading a GPU
machine's run folders); importing torch and transformers alone takes seconds there. Each check
runs in a fresh interpreter, since this test session has torch loaded already.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("modules", ["kedit.reports, kedit.data", "kedit.runs", "kedit.data.pitfalls", "kedit.reports.intervals",
                                     "kedit.training"])
def test_reading_packages_import_without_torch(modules):
    code = (f"import sys, {modules}; heavy = sorted({{'torch', 'transformers'}} & set(sys.modules)); "
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
