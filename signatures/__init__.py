"""Content package (installed under sentinel.*)."""
