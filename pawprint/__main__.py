from pawprint.cli import main

raise SystemExit(main())
