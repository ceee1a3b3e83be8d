"""The paper's evaluation, beside the pipeline: ground-truth data sets as cell stores
(``datasets``), the baselines (``baselines``, ``generative``), the metrics (``metrics``), the
protocol (``protocol``) and its table beside the paper's numbers (``report``)."""
