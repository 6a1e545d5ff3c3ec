import sys

from frozenaug.builder.cli import main

sys.exit(main())
