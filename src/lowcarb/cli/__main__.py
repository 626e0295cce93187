"""`python -m lowcarb.cli`: the `lowcarb` command."""

import sys

from lowcarb.cli import main

sys.exit(main())
