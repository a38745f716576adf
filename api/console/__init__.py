"""The console for people (SPEC 7.5): server-rendered pages under ``/console/``."""
