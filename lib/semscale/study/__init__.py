"""The study's chapters: the computation behind each notebook, and the published numbers it compares with."""
