import sys

from emstack.cli import main

sys.exit(main())
