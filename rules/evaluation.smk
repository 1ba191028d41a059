rule evaluation_response:
    input:
        unpack(get_prompt_inputs("evaluation")),
    output:
        prompt=PATHS.prompt_path("evaluation", "{gen_id}"),
        raw=PATHS.raw_path("evaluation", "{gen_id}"),
        metadata=PATHS.metadata_path("evaluation", "{gen_id}"),
    log:
        PATHS.log_path("evaluation_response", "{gen_id}"),
    run:
        steps.write_response(RT, "evaluation", wildcards.gen_id, log[0])


rule evaluation_parse:
    input:
        raw=PATHS.raw_path("evaluation", "{gen_id}"),
        metadata=PATHS.metadata_path("evaluation", "{gen_id}"),
    output:
        parsed=PATHS.parsed_path("evaluation", "{gen_id}"),
    log:
        PATHS.log_path("evaluation_parse", "{gen_id}"),
    run:
        steps.write_parsed(RT, "evaluation", wildcards.gen_id, log[0])


# Cluster runs (reply_batch_size > 0): one job makes the model calls of a batch of documents.
rule evaluation_replies:
    input:
        unpack(get_reply_batch_inputs("evaluation")),
    output:
        batch=PATHS.reply_batch_path("evaluation", "{batch_id}"),
    log:
        PATHS.log_path("evaluation_replies", "{batch_id}"),
    run:
        batches.write_reply_batch(
            RT, "evaluation", wildcards.batch_id, output.batch, log[0]
        )
