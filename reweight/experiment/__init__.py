"""The experiment layer: configuration, sweeps, the runner and its child runs, MLflow tracking,
checkpoints, interrupts, comparison and plots. It builds engines from the registry of
components and runs them.

It imports the core and the components, never the command line.
"""
