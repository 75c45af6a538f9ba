import sys

from worldmodel.cli import console

sys.exit(console())
