"""Built-in hypergradient methods: one step (forward mode) and unrolled (torch.func or ``higher``),
both replaying the real SGD step (``sgd``)."""
