import sys

from nbmf.cli import main

sys.exit(main())
