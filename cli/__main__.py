"""``python -m cli ...`` is ``bckd ...``."""

import sys

from cli import main

sys.exit(main())
