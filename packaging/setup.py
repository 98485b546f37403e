"""py2app's setup script for Folio.app; run it through `python packaging/release.py build`.

Everything it passes comes from bundle.py, which the tests check on any OS.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bundle  # noqa: E402

# modulegraph cannot see through pip's editable-install import hook: put the sources on the path.
sys.path.insert(0, str(bundle.ROOT))

if __name__ == "__main__":
    from setuptools import setup

    setup(
        name=bundle.APP_NAME,
        version=bundle.version(),
        app=[str(bundle.ENTRY_SCRIPT)],
        options={"py2app": bundle.py2app_options()},
        setup_requires=["py2app"],
    )
