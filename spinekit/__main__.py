"""``python -m spinekit`` (and ``PythonSlicer -m spinekit``) runs the CLI."""

import sys

from spinekit.cli import main

sys.exit(main())
