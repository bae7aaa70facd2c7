import sys

from sonik_pipeline.cli import main

sys.exit(main())
