"""The console's screens: the dashboard and its modal dialogs."""
