"""`python -m workbench ...` (also what `torchrun -m workbench eval ...` runs)."""

import sys

from .cli import main

sys.exit(main())
