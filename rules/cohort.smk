# The cohort checkpoint (SPEC §3): validates a cohort before any model call and writes its
# manifest and membership; the documents it lists become the gens-store targets. A new membership
# is checked against the budgets before any of its documents can run (daydream.budget).


checkpoint cohort_membership:
    input:
        unpack(get_cohort_inputs),
    output:
        membership=PATHS.membership_csv("{cohort_id}"),
        manifest=PATHS.manifest_json("{cohort_id}"),
    log:
        PATHS.log_path("cohort_membership", "{cohort_id}"),
    run:
        cohorts.write_cohort(RT, wildcards.cohort_id, log[0])
        budget.check_cohort(RT, wildcards.cohort_id)
