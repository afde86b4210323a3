"""`python -m bertforge …` (and `torchrun -m bertforge pretrain …`)."""

import sys

from bertforge.cli.main import main

sys.exit(main())
