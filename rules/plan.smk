# The cost plan (README "Before paying: the plan"): `snakemake plan` runs the cohort checkpoints
# (no model call, no API key), writes PATHS.plan_csv (the calls still missing per stage, template and model,
# with tokens and a low-high cost) and prints it as a table with the budgets. The rule has no
# output (only a log), so Snakemake runs it each time it is asked for.


rule plan:
    input:
        get_plan_inputs,
    log:
        PATHS.log_path("plan", "plan"),
    run:
        budget.write_plan(RT, log[0])
