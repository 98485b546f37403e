"""Folio.app's entry script: py2app makes it Contents/MacOS/Folio; it is the `folio` command."""

import sys

from app.cli import main

sys.exit(main())
