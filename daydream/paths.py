"""`Paths`: the one source of truth for every file the workflow reads or writes.

Rules, scripts, reports and tests build paths only through this class, so the layout of
SPEC §1/§5 lives here and nowhere else. Methods take plain strings, so Snakemake wildcards
such as ``"{gen_id}"`` pass through unchanged into rule outputs. Besides the data root it
knows the folder of cohort files (default: `config/cohorts/` of this checkout) and the
config schemas shipped with the package.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

GEN_FILES = ("prompt.txt", "raw.txt", "parsed.txt", "metadata.json")
# Metadata files of the original pipeline's gens store, read beside (or instead of) metadata.json.
ORIGINAL_METADATA_FILES = ("raw_metadata.json", "parsed_metadata.json")
REPLIES = ".replies"
SPILL = ".spill"  # paid replies that could not be written into their document's ledger
HISTORY = ".history"

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "config"
DEFAULT_COHORTS_DIR = CONFIG_DIR / "cohorts"


@functools.lru_cache(maxsize=64)
def _real_path(path: str) -> Path:
    """A data root's folder with symlinks resolved, once per process (every document job asks)."""
    return Path(path).resolve()


@functools.lru_cache(maxsize=256)
def _gen_dir(gens_root: Path, stage: str, gen_id: str) -> Path:
    """A document's folder: a document job asks for each of its files' paths, several times."""
    return gens_root / stage / gen_id


@functools.lru_cache(maxsize=64)
def _stage_text(paths: Paths, stage: str) -> str:
    """`str(paths.stage_dir(stage)) + os.sep`, once per process, data root and stage."""
    return str(paths.stage_dir(stage)) + os.sep


def schema_path(name: str) -> Path:
    """A JSON Schema of `config/schema/`, e.g. `schema_path("cohort")` (cohort.schema.yaml)."""
    return CONFIG_DIR / "schema" / f"{name}.schema.yaml"


@dataclass(frozen=True)
class Paths:
    data_root: Path
    cohorts_dir: Path = DEFAULT_COHORTS_DIR

    @classmethod
    def from_str(cls, data_root: str | Path, cohorts_dir: str | Path | None = None) -> Paths:
        return cls(Path(data_root), Path(cohorts_dir) if cohorts_dir else DEFAULT_COHORTS_DIR)

    # experiment definitions (tracked) ------------------------------------------------------
    @functools.cached_property  # every document job asks, several times
    def raw_root(self) -> Path:
        return self.data_root / "1_raw"

    @property
    def concepts_metadata_csv(self) -> Path:
        """`1_raw/concepts_metadata.csv`; the original also kept it under `1_raw/concepts/`."""
        top = self.raw_root / "concepts_metadata.csv"
        nested = self.raw_root / "concepts" / "concepts_metadata.csv"
        return nested if not top.exists() and nested.exists() else top

    @property
    def replication_config_csv(self) -> Path:
        """`1_raw/replication_config.csv`: the original pipeline's replicates per stage."""
        return self.raw_root / "replication_config.csv"

    def description_path(self, level: str, concept_id: str) -> Path:
        return self.raw_root / "concepts" / f"descriptions-{level}" / f"{concept_id}.txt"

    def description_files(self) -> list[Path]:
        """Every concept description of every level, sorted."""
        return sorted((self.raw_root / "concepts").glob("descriptions-*/*.txt"))

    def templates_csv(self, stage: str) -> Path:
        return self.raw_root / f"{stage}_templates.csv"

    def inside_raw(self, path: Path) -> bool:
        """True when `path` (symlinks resolved) lies inside `1_raw/`: the only files a prompt is
        built from, besides a parent's parsed.txt. Every document job asks this of its template
        and concept files, so a path written under `1_raw/` without `..` costs one `lstat` per
        part below `1_raw/` (none may be a symlink); any other path is resolved in full."""
        root = _real_path(str(self.raw_root))
        text, lexical_root = os.path.abspath(path), os.path.abspath(self.raw_root)
        parts = text[len(lexical_root) + 1:].split(os.sep) if text.startswith(lexical_root + os.sep) else None
        if parts is None or ".." in Path(path).parts:
            return Path(path).resolve().is_relative_to(root)
        current = lexical_root
        for part in parts:
            current = os.path.join(current, part)
            if os.path.islink(current):
                return Path(path).resolve().is_relative_to(root)
        return True

    def template_path(self, stage: str, template_id: str) -> Path:
        return self.raw_root / "templates" / stage / f"{template_id}.txt"

    def template_files(self) -> list[Path]:
        """Every template file of every stage, sorted."""
        return sorted((self.raw_root / "templates").glob("*/*.txt"))

    @property
    def models_csv(self) -> Path:
        return self.raw_root / "llm_models.csv"

    @property
    def human_scores_csv(self) -> Path:
        """`1_raw/human_scores.csv`: optional human ratings of essays (`daydream.human_scores`)."""
        return self.raw_root / "human_scores.csv"

    # cohorts --------------------------------------------------------------------------------
    def cohort_file(self, cohort_id: str) -> Path:
        """The cohort's definition, `<cohorts_dir>/<cohort_id>.yaml`."""
        return self.cohorts_dir / f"{cohort_id}.yaml"

    def design_spec_file(self, cohort_id: str) -> Path:
        """Where the original pipeline kept a cohort's design spec (SPEC-DSL.md):
        `<data_root>/cohorts/<cohort_id>/spec/config.yaml`."""
        return self.cohort_dir(cohort_id) / "spec" / "config.yaml"

    def cohort_dir(self, cohort_id: str) -> Path:
        return self.data_root / "cohorts" / cohort_id

    def membership_csv(self, cohort_id: str) -> Path:
        return self.cohort_dir(cohort_id) / "membership.csv"

    def manifest_json(self, cohort_id: str) -> Path:
        return self.cohort_dir(cohort_id) / "manifest.json"

    def checkpoint_record_json(self, cohort_id: str) -> Path:
        """What the cohort's membership was built from: the fingerprint and the SHA-256 of
        each checkpoint input (`daydream.checkpoint_inputs`)."""
        return self.cohort_dir(cohort_id) / "checkpoint_inputs.json"

    def cohort_fingerprint(self, cohort_id: str, fingerprint: str) -> Path:
        """The checkpoint's input that names one content of its inputs."""
        return self.cohort_dir(cohort_id) / ".inputs" / f"{fingerprint}.json"

    def reports_dir(self, cohort_id: str) -> Path:
        return self.cohort_dir(cohort_id) / "reports"

    def cohort_report(self, cohort_id: str, name: str) -> Path:
        """A cohort report by its SPEC §9 name, e.g. `parsing/aggregated_scores.csv`."""
        return self.reports_dir(cohort_id) / name

    def cohort_site(self, cohort_id: str) -> Path:
        """The cohort's results site (`daydream.site`): a folder of static pages, `index.html` first."""
        return self.reports_dir(cohort_id) / "site"

    def cohort_site_bundle(self, cohort_id: str) -> Path:
        """The same site as one self-contained file (what `snakemake --report` embeds)."""
        return self.reports_dir(cohort_id) / "site.html"

    @property
    def combo_mappings_csv(self) -> Path:
        return self.data_root / "combo_mappings.csv"

    # the gens store -------------------------------------------------------------------------
    @functools.cached_property  # every document job asks, several times
    def gens_root(self) -> Path:
        return self.data_root / "gens"

    def stage_dir(self, stage: str) -> Path:
        return self.gens_root / stage

    def gen_dir(self, stage: str, gen_id: str) -> Path:
        return _gen_dir(self.gens_root, stage, gen_id)

    def gen_dir_texts(self, stage: str, gen_ids: Iterable[str], name: str = "") -> list[str]:
        """`gen_dir` of each gen_id as a string, or the file `name` in it (one of GEN_FILES or
        ORIGINAL_METADATA_FILES): the bulk form of `gen_dir` / `parsed_path` / ... for readers of
        thousands of documents (string joins, no Path object per document)."""
        if name and name not in GEN_FILES + ORIGINAL_METADATA_FILES:
            raise ValueError(f"{name!r} is not a file of a document; expected one of "
                             f"{', '.join(GEN_FILES + ORIGINAL_METADATA_FILES)}")
        base, tail = str(self.stage_dir(stage)) + os.sep, os.sep + name if name else ""
        return [base + str(gen_id) + tail for gen_id in gen_ids]

    def gen_file_text(self, stage: str, gen_id: str, name: str) -> str:
        """`str(gen_dir(stage, gen_id) / name)` by joining strings (no Path object): for what
        Snakemake asks once per job, such as a document job's parent's parsed.txt. `name` is a
        file of a document (GEN_FILES), as `gen_dir_texts` takes it."""
        return _stage_text(self, stage) + gen_id + os.sep + name

    def prompt_path(self, stage: str, gen_id: str) -> Path:
        return self.gen_dir(stage, gen_id) / "prompt.txt"

    def raw_path(self, stage: str, gen_id: str) -> Path:
        return self.gen_dir(stage, gen_id) / "raw.txt"

    def parsed_path(self, stage: str, gen_id: str) -> Path:
        return self.gen_dir(stage, gen_id) / "parsed.txt"

    def metadata_path(self, stage: str, gen_id: str) -> Path:
        return self.gen_dir(stage, gen_id) / "metadata.json"

    def raw_metadata_path(self, stage: str, gen_id: str) -> Path:
        """The original pipeline's metadata of the response (usage, finish_reason, ...); read,
        never written (`daydream.store.read_document_metadata`)."""
        return self.gen_dir(stage, gen_id) / ORIGINAL_METADATA_FILES[0]

    def parsed_metadata_path(self, stage: str, gen_id: str) -> Path:
        """The original pipeline's metadata of the parse (parser_name, success, error); read only."""
        return self.gen_dir(stage, gen_id) / ORIGINAL_METADATA_FILES[1]

    def replies_dir(self, stage: str, gen_id: str) -> Path:
        """The document's paid-reply ledger: one file per prompt ever answered (never a
        Snakemake output, so Snakemake never deletes it)."""
        return self.gen_dir(stage, gen_id) / REPLIES

    def reply_path(self, stage: str, gen_id: str, prompt_sha256: str) -> Path:
        """The saved reply to one prompt, named by the prompt's SHA-256 (first 16 hex)."""
        return self.replies_dir(stage, gen_id) / f"{prompt_sha256[:16]}.json"

    def spill_paths(self, stage: str, gen_id: str, prompt_sha256: str) -> tuple[Path, Path]:
        """Where a paid reply goes when its reply_path cannot be written (a full disk, a folder
        that cannot be written): `<data_root>/.spill/`, then the system's temp folder (another
        filesystem, most often), in a folder named by the data root. `ledger.saved_reply` looks
        there too and moves a reply it finds into the ledger."""
        name = f"{stage}__{gen_id}__{prompt_sha256[:16]}.json"
        return tuple(folder / name for folder in self._spill_folders)

    @functools.cached_property
    def _spill_folders(self) -> tuple[Path, Path]:
        tag = hashlib.sha256(str(_real_path(str(self.data_root))).encode("utf-8")).hexdigest()[:12]
        return self.data_root / SPILL, Path(tempfile.gettempdir()) / f"daydream-spill-{tag}"

    @property
    def rehearsal_marker(self) -> Path:
        """Present once an offline rehearsal reply was saved here (`daydream.rehearsal`)."""
        return self.data_root / ".daydream-offline-replies"

    @property
    def paid_marker(self) -> Path:
        """Present once a reply of a real provider was saved here (`daydream.rehearsal`)."""
        return self.data_root / ".daydream-paid-replies"

    def history_dir(self, stage: str, gen_id: str, stamp: str) -> Path:
        """Where a deliberate regeneration moves the document's earlier files."""
        return self.gen_dir(stage, gen_id) / HISTORY / stamp

    # operational outputs --------------------------------------------------------------------
    @functools.cached_property  # every document job asks, several times
    def reporting_dir(self) -> Path:
        return self.data_root / "7_reporting"

    @property
    def llm_calls_jsonl(self) -> Path:
        """One line per model call made (offline included): the audit log of what was paid."""
        return self.reporting_dir / "llm_calls.jsonl"

    @property
    def llm_errors_jsonl(self) -> Path:
        return self.reporting_dir / "llm_errors.jsonl"

    @property
    def parse_errors_jsonl(self) -> Path:
        return self.reporting_dir / "parse_errors.jsonl"

    @property
    def stale_generations_csv(self) -> Path:
        return self.reporting_dir / "stale_generations.csv"

    def stale_shard(self, shard: str) -> Path:
        """One shard of the stale report: the verdicts of its documents (`stale.write_stale_shard`)."""
        return self.reporting_dir / "stale_shards" / f"{shard}.json"

    def documents_due(self, group: str, key: str) -> Path:
        """A group of documents with missing files, targeted by the default target in their place
        (`targets.document_targets`): written once they are made, removed at the run's end; `key`
        names the run and the files it waits for."""
        return self.documents_due_dir / f"{group}-{key}.txt"

    @property
    def documents_due_dir(self) -> Path:
        return self.reporting_dir / "documents_due"

    @property
    def document_checks_jsonl(self) -> Path:
        """What each document's files were checked to be, by stat key (`daydream.checks`)."""
        return self.reporting_dir / "document_checks.jsonl"

    @property
    def plan_csv(self) -> Path:
        """`snakemake plan`: the calls still missing per stage and model, with tokens and cost."""
        return self.reporting_dir / "plan.csv"

    def reply_batch_path(self, stage: str, batch_id: str) -> Path:
        """Cluster runs: the record of one batch of model calls (one Slurm job): per document
        `called` or `reused`. Written only when every call of the batch succeeded."""
        return self.reporting_dir / "reply_batches" / stage / f"{batch_id}.json"

    # provider batches (daydream.batch) -------------------------------------------
    @property
    def provider_batches_dir(self) -> Path:
        """The durable batch ledger: one record per provider batch ever submitted. Outside
        `7_reporting/` on purpose: `make clean-outputs` must not forget batches in flight."""
        return self.data_root / "batches"

    def provider_batch_state(self, local_id: str) -> Path:
        """A batch's state: provider, remote id, status, counts, outcomes (rewritten as it moves)."""
        return self.provider_batches_dir / f"{local_id}.json"

    def provider_batch_requests(self, local_id: str) -> Path:
        """A batch's requests (custom_id -> document, prompt and its hash), written once before it
        is submitted."""
        return self.provider_batches_dir / f"{local_id}.requests.json"

    @property
    def provider_batches_lock(self) -> Path:
        return self.provider_batches_dir / ".lock"

    def batch_round_path(self, run_id: str, stage: str, round_id: str) -> Path:
        """The record of one batch round of a run: per document `collected`, `in_flight`,
        `failed` or `direct`. Named by the run, so every run looks at its batches again."""
        return self.reporting_dir / "batch_rounds" / run_id / stage / f"{round_id}.json"

    @property
    def cross_experiment_dir(self) -> Path:
        return self.data_root / "7_cross_experiment"

    def cross_table(self, name: str, cohort_id: str | None = None) -> Path:
        """`7_cross_experiment/<name>`, or `7_cross_experiment/by_cohort/<cohort_id>/<name>` for
        the tables restricted to one cohort's membership."""
        base = self.cross_experiment_dir
        return base / name if cohort_id is None else base / "by_cohort" / cohort_id / name

    def log_path(self, rule: str, *names: str) -> Path:
        """A job's log: `logs/<rule>/<name>/.../<last>.log`."""
        *folders, last = names
        return self.data_root.joinpath("logs", rule, *folders, f"{last}.log")
