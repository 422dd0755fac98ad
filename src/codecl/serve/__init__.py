"""Serving a finished run: the Python API (`load` -> `Generator`), the micro-batcher and the HTTP server.

`codecl.serve.generator` needs only codecl's own dependencies; `codecl.serve.server` imports
FastAPI and uvicorn when the server is built.
"""
from codecl.serve.generator import Generator, load, pick_run

__all__ = ["Generator", "load", "pick_run"]
