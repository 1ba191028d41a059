rule draft_response:
    input:
        unpack(get_prompt_inputs("draft")),
    output:
        prompt=PATHS.prompt_path("draft", "{gen_id}"),
        raw=PATHS.raw_path("draft", "{gen_id}"),
        metadata=PATHS.metadata_path("draft", "{gen_id}"),
    log:
        PATHS.log_path("draft_response", "{gen_id}"),
    run:
        steps.write_response(RT, "draft", wildcards.gen_id, log[0])


rule draft_parse:
    input:
        raw=PATHS.raw_path("draft", "{gen_id}"),
        metadata=PATHS.metadata_path("draft", "{gen_id}"),
    output:
        parsed=PATHS.parsed_path("draft", "{gen_id}"),
    log:
        PATHS.log_path("draft_parse", "{gen_id}"),
    run:
        steps.write_parsed(RT, "draft", wildcards.gen_id, log[0])


# Cluster runs (reply_batch_size > 0): one job makes the model calls of a batch of documents.
rule draft_replies:
    input:
        unpack(get_reply_batch_inputs("draft")),
    output:
        batch=PATHS.reply_batch_path("draft", "{batch_id}"),
    log:
        PATHS.log_path("draft_replies", "{batch_id}"),
    run:
        batches.write_reply_batch(
            RT, "draft", wildcards.batch_id, output.batch, log[0]
        )
