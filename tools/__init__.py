"""Command-line tools for trained models: run each as ``python -m tools.NAME`` from the repository
root (``--helpfull`` lists its flags)."""
