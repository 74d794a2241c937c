"""``python -m cortex_tui``: the console, as ``cortex-tui`` runs it."""

import sys

from cortex_tui.app import main

sys.exit(main())
