import sys

from gantk.cli import main

sys.exit(main())
