"""Tasks: the executor that runs imports in the background."""
