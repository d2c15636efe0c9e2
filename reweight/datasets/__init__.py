"""Real image data sets: file readers (``files``), the catalogue of known sets and where their
files live (``catalog``), vectorised transformations (``transforms``) and the data-set plugins
built from them (``vision``)."""
