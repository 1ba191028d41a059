rule cohort_reports:
    input:
        unpack(get_cohort_report_inputs),
    output:
        aggregated=PATHS.cohort_report("{cohort_id}", "parsing/aggregated_scores.csv"),
        generation_scores=PATHS.cohort_report("{cohort_id}", "summary/generation_scores.csv"),
    log:
        PATHS.log_path("cohort_reports", "{cohort_id}"),
    run:
        reports.write_cohort_reports(PATHS, wildcards.cohort_id, RT.experiment, log[0])
