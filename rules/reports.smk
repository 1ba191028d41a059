rule cohort_reports:
    input:
        unpack(get_cohort_report_inputs),
    output:
        aggregated=PATHS.cohort_report("{cohort_id}", "parsing/aggregated_scores.csv"),
        generation_scores=PATHS.cohort_report("{cohort_id}", "summary/generation_scores.csv"),
    log:
        PATHS.log_path("cohort_reports", "{cohort_id}"),
    run:
        steps.write_cohort_reports(RT, wildcards.cohort_id, log[0])
