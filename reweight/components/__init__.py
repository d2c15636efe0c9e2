"""The built-in components: data sets and their readers, models, granularities and
hypergradient methods. They implement the core's contracts and are registered through the
same hooks as any third-party plugin (``reweight.components.builtins``, the entry point
``reweight``).

They import the core, never the experiment layer or the command line.
"""
