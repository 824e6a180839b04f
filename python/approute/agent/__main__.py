"""python -m approute.agent: the same as ``approute agent``."""

import sys

from .service import main

sys.exit(main())
