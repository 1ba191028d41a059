checkpoint cohort_membership:
    input:
        unpack(get_cohort_inputs),
    output:
        membership=PATHS.membership_csv("{cohort_id}"),
        manifest=PATHS.manifest_json("{cohort_id}"),
    log:
        PATHS.log_path("cohort_membership", "{cohort_id}"),
    run:
        steps.write_cohort(RT, input.cohort_file, wildcards.cohort_id, log[0])
