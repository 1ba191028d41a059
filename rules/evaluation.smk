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
