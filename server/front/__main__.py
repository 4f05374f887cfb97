"""``python -m server.front --fd N``: the gRPC front process (started by the service, not by hand)."""

import sys

from server.front.process import main

sys.exit(main())
