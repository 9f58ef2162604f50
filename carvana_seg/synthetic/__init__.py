"""The built-in data: a turntable renderer of made-up cars, its generator in Kaggle's layout, and its
DataModule.
"""
