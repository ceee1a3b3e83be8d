"""The CCRL method and its training: the backbone, heads, loss and module (``backbone``, ``heads``,
``losses``, ``model``), its views and data (``augment``, ``data``), the loop and what it writes
(``train``, ``monitor``, ``checkpoint``, ``schedule``, ``distributed``, ``model_io``)."""
