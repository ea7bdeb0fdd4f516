"""The data contract (plain layout), loading with line-level error reports, feedback labels, validation."""
