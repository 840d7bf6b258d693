"""``python -m tvr_gym ...`` is the ``tvr-gym`` command (also under ``accelerate launch -m tvr_gym``)."""

import sys

from tvr_gym.apps.cli import main

sys.exit(main())
