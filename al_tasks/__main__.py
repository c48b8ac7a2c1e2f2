import sys

from al_tasks.cli import main

sys.exit(main())
