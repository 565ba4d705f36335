from metalearn_lib.cli import main

raise SystemExit(main())
