"""`python -m sentune.cli`: the `sentune` command."""

import sys

from sentune.cli import main

sys.exit(main())
