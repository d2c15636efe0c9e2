"""The core: the contracts a plugin author programs against (data, granularity, strategy,
hypergradient, the bilevel network, the plugin hooks) and the bilevel loop that runs them.

It imports nothing from the other layers of reweight (components, experiment, command line).
"""
