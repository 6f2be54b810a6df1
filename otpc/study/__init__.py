"""The study's six steps as library functions; ``stages/`` wraps each in a click command."""
