import sys

from kdstream.cli import main

sys.exit(main())
