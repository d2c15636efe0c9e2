"""Built-in data sets: the synthetic benchmarks (``synthetic``, ``synthetic_annotators``,
``synthetic_tasks``), sources made of several tasks (``tasks``), and real image sets: file
readers (``files``), the catalogue of known sets and where their files live (``catalog``,
``download``), vectorised transformations (``transforms``) and the data-set plugins built from
them (``vision``)."""
