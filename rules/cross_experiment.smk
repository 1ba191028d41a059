# Cross-experiment tables (SPEC §9), rebuilt from every evaluation in the gens store, all cohorts.
# Not in the default target (a whole-store scan): `snakemake cross_experiment_tables`. It reruns
# when an active cohort's scores change; after runs of other cohorts add
# `--forcerun cross_experiment_tables`, or use scripts/aggregate_scores.py + build_pivot_tables.py.


rule cross_experiment_tables:
    input:
        cohort_scores=targets.cross_experiment_inputs(RT),
    output:
        **cross_table_outputs(),
    log:
        PATHS.log_path("cross_experiment_tables", "all"),
    run:
        reports.write_cross_experiment_tables(PATHS, log[0])
