# Cohort reports (SPEC §9): the tables, then the figures and pages of `snakemake --report`.
# Outputs come from the report registry (daydream/reports/__init__.py). The rules run
# in-process (`run:`), so they take no `conda:`; environment.yml serves them. Last, the results site
# of a cohort (daydream/site), its pages built from those reports and the gens store.
# No job lists every document's files as inputs: Snakemake's cost of preparing and finishing a job
# grows with its inputs times its dependencies (and its outputs). Each stale_shard job lists about
# sqrt(N) documents, stale_generations its shards, and the reports and the site follow the stale
# report (daydream/targets.py, daydream/stale.py).


rule cohort_reports:
    input:
        unpack(get_cohort_report_inputs),
    output:
        **report_outputs("tables"),
    log:
        PATHS.log_path("cohort_reports", "{cohort_id}"),
    run:
        reports.write_cohort_reports(PATHS, wildcards.cohort_id, RT.experiment, log[0])


rule cohort_report_figures:
    input:
        report_files("tables"),
    output:
        **report_outputs("figures"),
    log:
        PATHS.log_path("cohort_report_figures", "{cohort_id}"),
    run:
        reports.write_cohort_figures(PATHS, wildcards.cohort_id, RT.experiment, log[0])


rule stale_shard:
    input:
        get_stale_shard_inputs,
    output:
        PATHS.stale_shard("{shard}"),
    log:
        PATHS.log_path("stale_shard", "{shard}"),
    run:
        stale.write_stale_shard(RT, wildcards.shard, log[0])


rule stale_generations:
    input:
        unpack(get_stale_report_inputs),
    output:
        PATHS.stale_generations_csv,
    log:
        PATHS.log_path("stale_generations", "stale_generations"),
    run:
        stale.write_stale_report(RT, log[0], input.shards)


rule cohort_site:
    input:
        unpack(get_cohort_site_inputs),
    output:
        site=directory(PATHS.cohort_site("{cohort_id}")),
        bundle=html_report_entry(reports.SITE),
    log:
        PATHS.log_path("cohort_site", "{cohort_id}"),
    run:
        site.write_site(PATHS, wildcards.cohort_id, RT.experiment, log[0])
