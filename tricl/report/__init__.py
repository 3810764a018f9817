"""What the dashboard's pages and the CLI show, shaped from stored artifacts (torch-free).

A report turns artifacts (comparison tables, analyses, the study's results) into view-models:
tables, verdicts and their thresholds, captions. Pages in ``app/views`` only lay them out, and the
tests check these modules without Streamlit. Nothing here computes on a dataset or a model.
"""
