"""`Runtime`: what every job of one Snakemake process shares, built once from the config.

The validated config, the `Paths`, the model-call settings, the membership index of the
active cohorts, the run's state (`run`: a `daydream.run.Run`, the one object every spend
passes through) and, loaded on first use, the experiment tables. Rules pass it to the package
with the wildcards; the package never sees the `snakemake` object.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from daydream import settings
from daydream.experiment import Experiment, Template, load_experiment
from daydream.membership import Member, MembershipIndex
from daydream.paths import Paths
from daydream.run import Run

log = logging.getLogger(__name__)


def configure_logging(level: int = logging.INFO) -> None:
    """Send the package's log lines (one per model call, retries, warnings) to stderr once."""
    logger = logging.getLogger("daydream")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("daydream %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


class Runtime:
    """Everything a job needs, built once per Snakemake process from the config."""

    def __init__(self, config: dict):
        self.config = settings.validated(config)
        self.paths = Paths.from_str(self.config["data_root"], self.config.get("cohorts_dir"))
        self.cohort_ids = settings.cohort_list(self.config["cohorts"])
        self.settings = settings.LLMSettings.from_config(self.config)
        self.membership = MembershipIndex(self.paths, self.cohort_ids)
        self.reply_batch_size = int(self.config["reply_batch_size"])  # cluster runs: see batches
        self._experiment: Experiment | None = None
        self._lock = threading.Lock()
        self.run = Run(self)  # budget guard, counters, batch rounds, concurrency caps
        if self.settings.offline and self.paths.data_root.resolve() == Path("data").resolve():
            log.warning("offline=true writes rehearsal replies into %s; they would stand in for paid "
                        "ones (the stale report flags them). Use --config data_root=<another folder>.",
                        self.paths.data_root)

    @property
    def experiment(self) -> Experiment:
        with self._lock:
            if self._experiment is None:
                self._experiment = load_experiment(self.paths)
            return self._experiment

    def template(self, member: Member) -> Template:
        return self.experiment.templates[member.stage][member.template_id]
