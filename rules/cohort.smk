# The cohort checkpoint (SPEC §3): validates a cohort before any model call and writes its
# manifest and membership; the documents it lists become the gens-store targets. Content, not
# modification time, says when it reruns (daydream/checkpoint_inputs.py): its input
# `fingerprint` names today's content of what it reads, and its other inputs are ancient.
# A new membership is checked against the budgets before any of its documents can run
# (daydream.budget).


rule cohort_inputs_fingerprint:
    output:
        PATHS.cohort_fingerprint("{cohort_id}", "{fingerprint}"),
    log:
        PATHS.log_path("cohort_inputs_fingerprint", "{cohort_id}", "{fingerprint}"),
    run:
        checkpoint_inputs.write_fingerprint(
            PATHS, wildcards.cohort_id, wildcards.fingerprint, output[0]
        )


checkpoint cohort_membership:
    input:
        unpack(get_cohort_inputs),
    output:
        membership=PATHS.membership_csv("{cohort_id}"),
        manifest=PATHS.manifest_json("{cohort_id}"),
        record=PATHS.checkpoint_record_json("{cohort_id}"),
    log:
        PATHS.log_path("cohort_membership", "{cohort_id}"),
    run:
        make_cohort(wildcards.cohort_id, log[0])
