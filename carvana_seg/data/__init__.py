"""The loader chain for photos in Kaggle's layout: layout, decode, run-length codec, decoded cache,
dataset, DataModule.
"""
