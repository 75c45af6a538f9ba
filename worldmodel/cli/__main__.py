import sys

from worldmodel.cli import main

sys.exit(main())
