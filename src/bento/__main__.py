"""``python -m bento``: the same as the ``bento`` command."""

import sys

from bento.cli import main

sys.exit(main())
