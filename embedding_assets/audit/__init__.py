"""The store audit: what it finds (findings.py) and how (store.py)."""
