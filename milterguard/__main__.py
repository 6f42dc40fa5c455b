from milterguard.cli import main

raise SystemExit(main())
