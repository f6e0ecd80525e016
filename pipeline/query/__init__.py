"""Query: the ``--where`` language (``where``), the one compile path for where + raw JSON filters (``filters``),
search over one or both named vectors (``search``), and queries as the CLI runs them (``queries``).
"""
