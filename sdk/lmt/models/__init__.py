"""Model families: one module each, registered once with :func:`lmt.registry.register_family`.

Modules here import no torch or transformers at import time; the tiny builders import them when called.
"""
