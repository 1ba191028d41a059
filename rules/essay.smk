rule essay_response:
    input:
        unpack(get_prompt_inputs("essay")),
    output:
        prompt=PATHS.prompt_path("essay", "{gen_id}"),
        raw=PATHS.raw_path("essay", "{gen_id}"),
        metadata=PATHS.metadata_path("essay", "{gen_id}"),
    log:
        PATHS.log_path("essay_response", "{gen_id}"),
    run:
        steps.write_response(RT, "essay", wildcards.gen_id, log[0])


rule essay_parse:
    input:
        raw=PATHS.raw_path("essay", "{gen_id}"),
        metadata=PATHS.metadata_path("essay", "{gen_id}"),
    output:
        parsed=PATHS.parsed_path("essay", "{gen_id}"),
    log:
        PATHS.log_path("essay_parse", "{gen_id}"),
    run:
        steps.write_parsed(RT, "essay", wildcards.gen_id, log[0])


# Cluster runs (reply_batch_size > 0): one job makes the model calls of a batch of documents.
rule essay_replies:
    input:
        unpack(get_reply_batch_inputs("essay")),
    output:
        batch=PATHS.reply_batch_path("essay", "{batch_id}"),
    log:
        PATHS.log_path("essay_replies", "{batch_id}"),
    run:
        batches.write_reply_batch(
            RT, "essay", wildcards.batch_id, output.batch, log[0]
        )
