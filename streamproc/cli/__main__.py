"""``python -m streamproc.cli``: the ``streamproc`` command without its console script."""

import sys

from streamproc.cli.commands import main

sys.exit(main())
