"""Django project: settings, models (accounts, delivery) and admin."""
