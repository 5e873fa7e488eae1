"""Grid cells as the domain sees them: importing a new grid version (dry-run diff, commit, re-routing of open cases)."""
