"""``python -m semisep``: the same as the ``semisep`` command."""

import sys

from semisep.cli import main

sys.exit(main())
