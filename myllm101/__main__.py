import sys

from myllm101.cli import main

sys.exit(main())
