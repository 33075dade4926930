"""``python -m lavt`` runs the ``lavt`` command."""

import sys

from .apps.cli import main

sys.exit(main())
