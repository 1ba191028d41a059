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
