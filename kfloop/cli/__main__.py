"""``python -m kfloop.cli``: the same as the ``kfloop`` command."""

import sys

from kfloop.cli.main import main

sys.exit(main())
