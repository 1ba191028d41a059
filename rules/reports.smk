# Cohort reports (SPEC §9): the tables, then the figures and pages of `snakemake --report`.
# Both rules run in-process (`run:`), so they take no `conda:`; environment.yml serves them.


rule cohort_reports:
    input:
        unpack(get_cohort_report_inputs),
    output:
        aggregated=PATHS.cohort_report("{cohort_id}", "parsing/aggregated_scores.csv"),
        generation_scores=report(
            PATHS.cohort_report("{cohort_id}", "summary/generation_scores.csv"),
            caption="../report/tables.rst",
            category="Tables",
            subcategory="{cohort_id}",
            labels={"cohort": "{cohort_id}", "table": "generation scores"},
        ),
        final_results=report(
            PATHS.cohort_report("{cohort_id}", "summary/final_results.csv"),
            caption="../report/tables.rst",
            category="Tables",
            subcategory="{cohort_id}",
            labels={"cohort": "{cohort_id}", "table": "final results"},
        ),
        perfect_score_paths=report(
            PATHS.cohort_report("{cohort_id}", "summary/perfect_score_paths.csv"),
            caption="../report/tables.rst",
            category="Tables",
            subcategory="{cohort_id}",
            labels={"cohort": "{cohort_id}", "table": "perfect score paths"},
        ),
        variance_analysis=report(
            PATHS.cohort_report("{cohort_id}", "analysis/variance_analysis.csv"),
            caption="../report/tables.rst",
            category="Tables",
            subcategory="{cohort_id}",
            labels={"cohort": "{cohort_id}", "table": "variance analysis"},
        ),
        judge_agreement=PATHS.cohort_report(
            "{cohort_id}", "analysis/judge_agreement.csv"
        ),
        mean_score_ci=report(
            PATHS.cohort_report("{cohort_id}", "analysis/mean_score_ci.csv"),
            caption="../report/tables.rst",
            category="Tables",
            subcategory="{cohort_id}",
            labels={"cohort": "{cohort_id}", "table": "mean score CI"},
        ),
    log:
        PATHS.log_path("cohort_reports", "{cohort_id}"),
    run:
        reports.write_cohort_reports(PATHS, wildcards.cohort_id, RT.experiment, log[0])


rule cohort_report_figures:
    input:
        aggregated=PATHS.cohort_report("{cohort_id}", "parsing/aggregated_scores.csv"),
        judge_agreement=PATHS.cohort_report(
            "{cohort_id}", "analysis/judge_agreement.csv"
        ),
        mean_score_ci=PATHS.cohort_report("{cohort_id}", "analysis/mean_score_ci.csv"),
    output:
        by_model=report(
            PATHS.cohort_report("{cohort_id}", "plots/scores_by_generation_model.png"),
            caption="../report/scores_by_generation_model.rst",
            category="Scores",
            subcategory="{cohort_id}",
            labels={"cohort": "{cohort_id}", "figure": "scores by generation model"},
        ),
        by_template=report(
            PATHS.cohort_report(
                "{cohort_id}", "plots/scores_by_generation_template.png"
            ),
            caption="../report/scores_by_generation_template.rst",
            category="Scores",
            subcategory="{cohort_id}",
            labels={
                "cohort": "{cohort_id}",
                "figure": "scores by generation template",
            },
        ),
        heatmap=report(
            PATHS.cohort_report("{cohort_id}", "plots/evaluator_template_heatmap.png"),
            caption="../report/evaluator_template_heatmap.rst",
            category="Scores",
            subcategory="{cohort_id}",
            labels={
                "cohort": "{cohort_id}",
                "figure": "evaluator x template heat map",
            },
        ),
        judge_agreement=report(
            PATHS.cohort_report("{cohort_id}", "analysis/judge_agreement.html"),
            caption="../report/judge_agreement.rst",
            category="Judges",
            subcategory="{cohort_id}",
            labels={"cohort": "{cohort_id}", "page": "judge agreement"},
        ),
        top_essays=report(
            PATHS.cohort_report("{cohort_id}", "summary/top_essays.html"),
            caption="../report/top_essays.rst",
            category="Essays",
            subcategory="{cohort_id}",
            labels={"cohort": "{cohort_id}", "page": "top essays"},
        ),
    log:
        PATHS.log_path("cohort_report_figures", "{cohort_id}"),
    run:
        reports.write_cohort_figures(PATHS, wildcards.cohort_id, RT.experiment, log[0])


rule stale_generations:
    input:
        get_stale_report_inputs,
    output:
        PATHS.stale_generations_csv,
    log:
        PATHS.log_path("stale_generations", "stale_generations"),
    run:
        stale.write_stale_report(RT, log[0])
