"""`python -m broadcaster` is the `broadcaster` command."""

from __future__ import annotations

import sys

from broadcaster.cli import main

sys.exit(main())
