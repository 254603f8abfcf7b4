"""The command-line client for people: `python -m foodcal.cli analyze photo.jpg`."""
