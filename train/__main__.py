"""``python -m train``: see train/driver.py."""
import sys

from train.driver import main

if __name__ == "__main__":
    sys.exit(main())
