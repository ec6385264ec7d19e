"""Test support shared by tests/*: never imported by production code.

``artifacts``: tiny real model artifacts and cross-process codec runs; ``ray_jobs``: one private Ray head
node per test session and a reader for offline W&B runs; ``stack``: call code from deep in the caller's stack. Tests import them as ``helpers.<module>``
(pytest puts tests/ on sys.path for the rootdir conftest).
"""
