from keiko.cli import main

raise SystemExit(main())
