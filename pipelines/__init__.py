"""FactoST's Prefect flows and its command line.

Importing the package sets the project's loggers to INFO (where nothing set them), so that the stage modules'
``logging`` records reach Prefect's flow-run log (Prefect forwards them as ``PREFECT_LOGGING_EXTRA_LOGGERS``,
which the CLI and ``prefect.yaml`` set) although the root logger stays at WARNING.
"""

import logging

PROJECT_LOGGERS = ("corpus", "training", "adaptation", "infra", "pipelines")

for _name in PROJECT_LOGGERS:
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.INFO)
