"""Cluster mode on Celery: the app (``app.py``), the job tasks (``tasks.py``), the scheduler's
tick task (``tick.py``), the worker entrypoint and its health server."""
