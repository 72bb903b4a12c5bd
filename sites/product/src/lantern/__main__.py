import sys

from lantern.main import main

sys.exit(main(sys.argv[1:]))
