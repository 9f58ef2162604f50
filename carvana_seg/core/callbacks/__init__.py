"""Lightning callbacks of the training core: `conf/callbacks/` and the recipes pick them by `_target_`."""
