"""Tasks: data, training and evaluation wired together, one module per task."""
