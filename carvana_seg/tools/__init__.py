"""Developer tools apart from the product: the benchmark, the resolution ceiling, the study's figures, the
sweep summary.
"""
