"""The lifecycle stages, written once: train, tune, predict, evaluate, report, and the pipeline
that runs them in order. A stage names no family and no data kind: it asks the family the spec
names (``rayline.families``) and the data kind that family declares (``rayline.data``).
"""
