"""The training core: the LightningModule (owner of the checkpoint), losses, metrics, callbacks, and what
training needs from the machine.
"""
