"""Explaining a model: attention maps of one input (`bertforge.explain.attention`), drawn as a
PNG or an interactive HTML page.

Nothing is imported here: matplotlib is an optional extra, imported by the module that needs it.
"""
