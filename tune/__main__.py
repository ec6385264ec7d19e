"""``python -m tune``: see tune/driver.py."""
import sys

from tune.driver import main

if __name__ == "__main__":
    sys.exit(main())
