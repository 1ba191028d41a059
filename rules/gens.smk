# The gens store (SPEC §5): one rule for every stage of daydream/stages.py. Each document is
# <gens store>/<stage>/<gen_id>/{prompt.txt, raw.txt, metadata.json, parsed.txt}, made by one job
# (the only rule that can pay for a call, through the paid-reply ledger). A reply that fails to
# parse fails the job after raw.txt is written; the profile's keep-incomplete keeps it to read.


rule gen_document:
    input:
        unpack(get_document_inputs),
    output:
        prompt=PATHS.prompt_path("{stage}", "{gen_id}"),
        raw=PATHS.raw_path("{stage}", "{gen_id}"),
        metadata=PATHS.metadata_path("{stage}", "{gen_id}"),
        parsed=PATHS.parsed_path("{stage}", "{gen_id}"),
    log:
        PATHS.log_path("gen_document", "{stage}", "{gen_id}"),
    run:
        documents.write_document(RT, wildcards.stage, wildcards.gen_id, log[0])


# Cluster runs (reply_batch_size > 0): one job makes the model calls of a batch of documents.
rule gen_replies:
    input:
        unpack(get_reply_batch_inputs),
    output:
        batch=PATHS.reply_batch_path("{stage}", "{batch_id}"),
    log:
        PATHS.log_path("gen_replies", "{stage}", "{batch_id}"),
    run:
        batches.write_reply_batch(
            RT, wildcards.stage, wildcards.batch_id, output.batch, log[0]
        )


# Batch mode (README "Batch mode"): one round per stage and run submits the stage's requests to
# the provider's batch API, or reattaches to the batches that hold them, and collects the
# replies. It sleeps between polls and takes no --cores slot (threads: 0). A checkpoint: when it
# ends, the default target is evaluated again and takes the documents whose replies it saved.
checkpoint provider_batch:
    input:
        unpack(get_batch_round_inputs),
    output:
        PATHS.batch_round_path("{run_id}", "{stage}", "{round_id}"),
    log:
        PATHS.log_path("provider_batch", "{run_id}", "{stage}", "{round_id}"),
    threads: 0
    run:
        batch_rounds.write_round(
            RT,
            wildcards.stage,
            wildcards.run_id,
            wildcards.round_id,
            output[0],
            log[0],
        )


# The default target's stand-in for a group of about sqrt(N) documents with missing files
# (daydream.targets.document_targets): it asks for them, so they are made even when the jobs that
# read them are up to date. Removed when the run ends (Snakemake keeps a temp() input of `all`).
rule documents_due:
    input:
        get_documents_due_inputs,
    output:
        PATHS.documents_due("{shard}", "{key}"),
    log:
        PATHS.log_path("documents_due", "{shard}-{key}"),
    run:
        targets.write_documents_due(output[0], input, log[0])
