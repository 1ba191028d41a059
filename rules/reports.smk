# Cohort reports (SPEC §9): the tables, then the figures and pages of `snakemake --report`.
# Outputs come from the report registry (daydream/reports/__init__.py). The rules run
# in-process (`run:`), so they take no `conda:`; environment.yml serves them. Last, the results site
# of a cohort (daydream/site), its pages built from those reports and the gens store.
# Only stale_generations lists every document's files as inputs: Snakemake's cost of finishing a
# job grows with its inputs times its outputs (it checksums each input for each output), so the
# reports and the site follow the stale report instead (daydream/targets.py).


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


rule stale_generations:
    input:
        get_stale_report_inputs,
    output:
        PATHS.stale_generations_csv,
    log:
        PATHS.log_path("stale_generations", "stale_generations"),
    run:
        stale.write_stale_report(RT, log[0])


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
