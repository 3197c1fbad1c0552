from trtpipe.cli import main

raise SystemExit(main())
