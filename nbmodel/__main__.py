"""``python -m nbmodel``: the same as the ``nbmodel`` command."""

import sys

from .cli import main

sys.exit(main())
