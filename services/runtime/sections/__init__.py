"""The sections of `Settings` (services/runtime/settings.py), one module per service or connection.

Import them from services.runtime.settings: that is their one public path."""
