# Cross-experiment tables (all cohorts): see the complete-reports issue.
