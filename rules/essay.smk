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
