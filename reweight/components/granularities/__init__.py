"""Built-in granularities: per sample (the paper's), per group, per task."""
