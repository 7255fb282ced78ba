from course_admin.cli import main

raise SystemExit(main())
