# The gens store (SPEC §5): one rule set for every stage of daydream/stages.py. Each document
# is data/gens/<stage>/<gen_id>/{prompt.txt, raw.txt, metadata.json} (gen_response, the only
# rule that can pay for a call) and parsed.txt (gen_parse, so a failed parse never loses raw.txt).


rule gen_response:
    input:
        unpack(get_response_inputs),
    output:
        prompt=PATHS.prompt_path("{stage}", "{gen_id}"),
        raw=PATHS.raw_path("{stage}", "{gen_id}"),
        metadata=PATHS.metadata_path("{stage}", "{gen_id}"),
    log:
        PATHS.log_path("gen_response", "{stage}", "{gen_id}"),
    run:
        documents.write_response(RT, wildcards.stage, wildcards.gen_id, log[0])


rule gen_parse:
    input:
        raw=PATHS.raw_path("{stage}", "{gen_id}"),
        metadata=PATHS.metadata_path("{stage}", "{gen_id}"),
    output:
        parsed=PATHS.parsed_path("{stage}", "{gen_id}"),
    log:
        PATHS.log_path("gen_parse", "{stage}", "{gen_id}"),
    run:
        documents.write_parsed(RT, wildcards.stage, wildcards.gen_id, log[0])


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
