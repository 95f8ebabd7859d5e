"""Where the optional real data files for tests and benchmarks are: one setting, ``FACTOST_TEST_DATA``.

The files (Monash ``.tsf``, M4 and LTSF csvs, sensor graphs; ``docs/architecture.md`` lists them) are public
data the project does not carry. The setting names their folder; without it the folder is ``data`` in a
``shared`` folder beside the repository checkout. Tests that need a file skip, naming the setting, when it is
absent. No side effects on import, so benchmark scripts use it too.
"""

from __future__ import annotations

import os
from pathlib import Path

TEST_DATA_SETTING = "FACTOST_TEST_DATA"
_CHECKOUT = Path(__file__).resolve().parent.parent


def real_data_root() -> Path:
    """The folder ``FACTOST_TEST_DATA`` names, else the default beside the checkout."""
    setting = os.environ.get(TEST_DATA_SETTING)
    return Path(setting) if setting else _CHECKOUT.parent / "shared" / "data"
