"""``python -m nalm``: the same as the ``nalm`` command."""

import sys

from .cli import main

sys.exit(main())
