"""``python -m lavt`` runs the ``lavt`` command."""

import sys

from .cli import main

sys.exit(main())
