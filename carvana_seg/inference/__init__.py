"""Using a trained network: device and autocast, photos at the network's size, the submission folder, error
pictures.
"""
