"""The networks: plain nn.Modules from normalised photos to car logits, one file per family."""
