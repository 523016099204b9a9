"""`python -m orchestration.cli …` is `flowsuite …`."""

import sys

from orchestration.cli.root import main

sys.exit(main())
