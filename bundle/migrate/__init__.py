"""Migration of legacy model files: a static scan, then conversion of what was approved.
"""
