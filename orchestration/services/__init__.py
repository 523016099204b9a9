"""Operator services: the embedded broker launcher (broker.py) and the status report (status.py)."""
