"""Models: the point encoder, the predictor, the ViT, EfficientNet-Lite and the teacher protocol.

Pure flax modules and pure functions on their params only; the folders their weights live in are
read and written by `crossjepa.weights`.
"""
