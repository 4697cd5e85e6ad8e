"""``python -m virnucpro_kernel ...``: the same command as ``virnucpro``; this is what ``torchrun`` launches."""

import sys

from .cli import main

sys.exit(main())
