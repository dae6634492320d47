"""The lightgbm family: ``spec.py`` (its spec section, light) and ``family.py`` (the implementation)."""
