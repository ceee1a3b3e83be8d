"""The ``label`` step (``pipeline``): embeddings (``embed``), K-means features and clusters
(``features``, ``cluster``), cluster names and colours (``palette``), and the exports: GeoJSON and
CSV (``export``, ``overlay``, ``overlay_kernels``, ``textrows``) and pictures (``visualize``)."""
