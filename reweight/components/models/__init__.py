"""Built-in models: an MLP and the paper's convnets, with the layers they share."""
