"""``python -m pfsmount.daemon``: the daemon process (see ``command``)."""

import sys

from pfsmount.daemon.command import main

sys.exit(main())
