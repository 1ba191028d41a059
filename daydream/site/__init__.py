"""The results site of a cohort: static HTML pages to read and compare what a run made.

`write_site` writes `data/cohorts/<cohort>/reports/site/` (`Paths.cohort_site`): an overview,
the essays table (sortable and filterable by a small inline script whose state is the URL
hash), one page per essay with its lineage (concepts, draft prompt and draft, essay prompt and
essay, every judge's full answer beside its parsed score), a Compare page (paired differences
with bootstrap intervals), a Judges page and every report table with its columns explained.
Pages link to each other and to the gens-store files by relative paths, so the folder opens
from file:// without a server.

It also writes the same pages as one file (`Paths.cohort_site_bundle`, `reports/site.html`):
each page a section shown by the hash (`#/essays.html?model=...`). Snakemake's self-contained
HTML report cannot hold a directory, so that file is what `snakemake --report report.html`
shows; gens-store links are plain text there and long tables are cut shorter.

Scores come from the written `parsing/aggregated_scores.csv`, so the site and the CSV agree.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import markupsafe
from jinja2.compiler import CodeGenerator

from daydream import store
from daydream.experiment import Experiment
from daydream.paths import Paths
from daydream.reports import evaluation_scales
from daydream.site import pages
from daydream.site.data import SiteData

log = logging.getLogger(__name__)

SITE_ROWS = 3000  # rows of a report table shown on its page (the CSV has them all)
BUNDLE_ROWS = 300  # the same in the one-file bundle
WRITE_THREADS = 2  # the folder's pages are written by these while the next ones render (the writes release the GIL)
_DICT_ATTRIBUTES = frozenset(dir(dict))


def escape_output(value: object) -> str:
    """What `{{ value }}` writes under autoescape, byte for byte `markupsafe.escape(value)`, for
    a plain str without the `Markup` object `escape` makes (its `__new__` is Python: about 750,000
    outputs in a 10k-document site, a fifth of its time). Anything else goes to `escape` itself."""
    if type(value) is not str:
        return markupsafe.escape(value)
    if "&" in value or "<" in value or ">" in value or "'" in value or '"' in value:
        return (value.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")
                .replace("'", "&#39;").replace('"', "&#34;"))
    return value


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator with an autoescaped output written through
    `environment.escape_output` (as Jinja writes `environment.finalize`). An output is only ever
    joined into the page (or a block's Markup), so a str in place of the Markup is the same text."""

    def _output_child_pre(self, node, frame, finalize) -> None:
        if frame.eval_ctx.volatile or not frame.eval_ctx.autoescape:
            super()._output_child_pre(node, frame, finalize)
            return
        self.write("environment.escape_output(")
        if finalize.src is not None:
            self.write(finalize.src)


class _Environment(jinja2.Environment):
    """Jinja's environment with `page.name` on a plain dict looked up as a key first. Jinja tries
    the attribute, catches AttributeError, then takes the key: over a million lookups per 10k-document
    site. A name that is an attribute of dict (`items`, `get`...) takes Jinja's own path, so every
    lookup resolves exactly as before. Outputs are escaped by `escape_output`."""

    code_generator_class = _CodeGenerator
    escape_output = staticmethod(escape_output)

    def getattr(self, obj, attribute):
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


# auto_reload off: the templates are package files, so each of the ~30,000 template loads of a
# 10k-document site (pages, their layout and includes) need not stat its file again.
_ENV = _Environment(loader=jinja2.PackageLoader("daydream.site", "templates"), autoescape=True,
                    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, auto_reload=False)
_ENV.globals.update(money=pages.money, share=pages.share)


@dataclass
class Renderer:
    """Renders pages as separate files under `root` (`bundle=False`) or as sections of one file.
    With a `writer`, each page file is written there (`finish` waits for every write)."""

    root: Path
    cohort_id: str
    bundle: bool
    writer: Executor | None = None
    sections: list[dict] = field(default_factory=list)
    written: int = 0
    largest: int = 0
    _folder_hrefs: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)
    _parent_rels: dict[tuple[str, str], tuple[str, str, str]] = field(default_factory=dict)
    _links: dict[tuple[str, str], str] = field(default_factory=dict)
    _writes: list[Future] = field(default_factory=list)

    def link(self, page: str, target: str) -> str:
        """A link from `page` to another page of the site (both relative to the site root),
        worked out once per page folder and target (every page links the same few)."""
        if self.bundle:
            return "#/" + target
        key = (os.path.dirname(page), target)
        found = self._links.get(key)
        if found is None:
            found = self._links[key] = os.path.relpath(target, key[0] or ".")
        return found

    def file_href(self, page: str, path: Path) -> str | None:
        """A link from `page` to a file outside the site (none in the bundle). The relative path
        of the file's folder is worked out once per folder and page folder (each document's
        folder holds several linked files); a folder that holds the page's folder takes the full
        computation, where the two would differ."""
        if self.bundle:
            return None
        page_folder = os.path.dirname(page)
        folder, name = os.path.split(os.fspath(path))
        key = (folder, page_folder)
        found = self._folder_hrefs.get(key)
        if found is None:  # (the relative path, whether it only climbs: then the file's own is taken)
            rel = self._folder_rel(folder, page_folder)
            found = self._folder_hrefs[key] = (rel, all(part in (".", "..") for part in rel.split("/")))
        rel, climbs = found
        if climbs:
            return Path(os.path.relpath(path, self.root / (page_folder or "."))).as_posix()
        return f"{rel}/{name}"

    def _folder_rel(self, folder: str, page_folder: str) -> str:
        """`folder` relative to the page's folder, as `os.path.relpath` gives it: its parent's
        (worked out once per parent: every document's folder is in its stage's) and its name,
        unless the parent's is "." or the page's folder is in `folder`, where the two differ.
        The absolute paths that test asks are the parent's and the page folder's, also once."""
        parent, name = os.path.split(folder)
        key = (parent, page_folder)
        found = self._parent_rels.get(key)
        if found is None:
            start = self.root / (page_folder or ".")
            found = self._parent_rels[key] = (Path(os.path.relpath(parent, start)).as_posix(),
                                              os.path.abspath(parent), os.path.abspath(start) + os.sep)
        rel, parent_abs, inside = found
        if rel == "." or name in ("", ".", "..") or inside.startswith(os.path.join(parent_abs, name) + os.sep):
            return Path(os.path.relpath(folder, self.root / (page_folder or "."))).as_posix()
        return f"{rel}/{name}"

    def page(self, template: str, path: str, variables: dict) -> None:
        """Render one page (`variables` is not changed: the folder and the bundle share them)."""
        layout = "fragment.html" if self.bundle else "layout.html"
        html = _ENV.get_template(template).render(
            layout=layout, cohort_id=self.cohort_id, link=lambda target: self.link(path, target),
            wide=variables.get("wide", False), **{k: v for k, v in variables.items() if k != "wide"})
        if self.bundle:
            self.sections.append({"path": path, "html": html, "wide": template in ("essays.html", "table.html")})
            return
        data = html.encode("utf-8")
        target = self.root / path
        if self.writer is None:
            store.write_bytes_atomic(target, data)  # it makes the folder when missing
        else:
            self._writes.append(self.writer.submit(store.write_bytes_atomic, target, data))
        self.written += 1
        self.largest = max(self.largest, len(data))

    def finish(self, target: Path | None = None) -> None:
        """Wait for the page files still being written (a failed write raises here), or write
        the bundle to `target`."""
        writes, self._writes = self._writes, []
        for write in writes:
            write.result()
        if self.bundle:
            html = _ENV.get_template("bundle.html").render(cohort_id=self.cohort_id, sections=self.sections,
                                                           link=lambda t: "#/" + t)
            store.write_text_atomic(target, html)


def _with_files(renderer: Renderer, page: str, documents: list[dict]) -> None:
    for document in documents:
        for f in document["files"]:
            f["href"] = renderer.file_href(page, f["path"])


def _plots(data: SiteData, renderer: Renderer) -> list[dict]:
    """The cohort's plots: copied beside the pages, or inlined in the bundle."""
    from daydream import reports

    out = []
    for report in reports.cohort_reports():
        source = data.paths.cohort_report(data.cohort_id, report.name)
        if report.kind != "figure" or not source.exists():
            continue
        if renderer.bundle:
            src = "data:image/png;base64," + base64.b64encode(source.read_bytes()).decode("ascii")
        else:
            target = renderer.root / "plots" / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            src = f"plots/{source.name}"
        out.append({"src": src, "title": report.title})
    return out


@dataclass
class Shared:
    """What the folder and the bundle show alike, worked out once: the essays' rows, each essay
    page's variables, the overview (less its plots), the essays table and the comparisons."""

    rows: list[dict]
    essays: dict[str, dict]
    overview: dict
    essays_table: dict
    comparisons: dict

    @classmethod
    def of(cls, data: SiteData) -> Shared:
        rows = pages.essay_rows(data)
        return cls(rows, {gen_id: pages.essay(data, gen_id) for gen_id in data.essays.index},
                   pages.overview(data, rows, []), pages.essays_table(data, rows), pages.comparisons(data))


def render(data: SiteData, renderer: Renderer, shared: Shared) -> None:
    """Every page of the site through `renderer`."""
    renderer.page("overview.html", "index.html", {**shared.overview, "plots": _plots(data, renderer)})
    renderer.page("essays.html", "essays.html", shared.essays_table)
    for row in shared.rows:
        variables = shared.essays[row["gen_id"]]
        _with_files(renderer, row["page"], [variables["draft"], variables["essay"], *variables["evaluations"]])
        renderer.page("essay.html", row["page"], variables)
    renderer.page("compare.html", "compare.html", shared.comparisons)
    tables = pages.report_tables(data)
    reports_dir = data.paths.reports_dir(data.cohort_id)
    for entry in tables:
        if not entry["path"].exists():
            continue
        shown = pages.table(data, entry, BUNDLE_ROWS if renderer.bundle else SITE_ROWS)
        entry["rows"] = shown["rows"]
        shown["href"] = renderer.file_href(entry["page"], entry["path"])
        renderer.page("table.html", entry["page"], {"title": entry["title"], "t": shown, "wide": True})
    renderer.page("tables.html", "tables.html", {"title": "Tables", "tables": tables, "reports_dir": str(reports_dir)})
    renderer.page("judges.html", "judges.html", pages.judges_page(data, tables))


def build_site(paths: Paths, cohort_id: str, experiment: Experiment) -> dict:
    """Write the site folder and the one-file bundle of one cohort; return what was written."""
    started, cpu = time.perf_counter(), time.process_time()
    data = SiteData(paths, cohort_id, experiment, evaluation_scales(experiment))
    root = paths.cohort_site(cohort_id)
    if root.exists():
        shutil.rmtree(root)  # a page of an essay no longer in the cohort must not linger
    root.mkdir(parents=True)
    shared = Shared.of(data)
    with ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="site-write") as writer:
        site = Renderer(root, cohort_id, bundle=False, writer=writer)
        render(data, site, shared)
        bundle = Renderer(root, cohort_id, bundle=True)
        render(data, bundle, shared)  # while the folder's last pages are written
        bundle.finish(paths.cohort_site_bundle(cohort_id))
        site.finish()
    return {"pages": site.written, "largest_page": site.largest, "essays": len(data.essays),
            "bundle_bytes": paths.cohort_site_bundle(cohort_id).stat().st_size,
            "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu}


def write_site(paths: Paths, cohort_id: str, experiment: Experiment, log_path: str | None = None) -> dict:
    """Rule `cohort_site`: the site of one cohort, and one line in the job's log."""
    built = build_site(paths, cohort_id, experiment)
    store.write_job_log(log_path, f"{cohort_id}: {built['pages']} pages ({built['essays']} essays, largest "
                                  f"{built['largest_page']:,} bytes), bundle {built['bundle_bytes']:,} bytes, "
                                  f"{built['seconds']:.1f} s: {paths.cohort_site(cohort_id) / 'index.html'} "
                                  f"({built['cpu_seconds']:.2f} s CPU)")
    return built
