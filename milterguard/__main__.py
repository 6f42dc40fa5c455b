from milterguard.cli.main import main

raise SystemExit(main())
