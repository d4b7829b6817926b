from evalharness.cli.main import main

raise SystemExit(main())
