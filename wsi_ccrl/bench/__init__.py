"""The paper's evaluation, beside the pipeline: ground-truth data sets as cell stores
(``datasets``), the baselines (``baselines``, ``generative``), the metrics (``metrics``) and the
protocol with its table (``protocol``)."""
