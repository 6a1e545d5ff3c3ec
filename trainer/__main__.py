import sys

from frozenaug.trainer.cli import main

sys.exit(main())
