"""Training data: synthetic textured shapes, scikit-learn's digits, and ImageNet-style image folders."""
