"""The outer ring: HTTP (FastAPI), SSE and the command line."""
