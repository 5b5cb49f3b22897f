"""The app layer: command-line tools built on the library (train, experiments, sweep, results, doctor,
download). Only the app layer imports the app layer (tests/test_architecture.py checks it)."""
