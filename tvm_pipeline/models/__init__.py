"""PyTorch models: the compiler's test zoo, MobileNetV2, and the paper's patch-tunnel network (configs/)."""
